"""The policy's settings as value objects: checked once, one default each, old keywords warned."""

from __future__ import annotations

import dataclasses
from typing import cast

import pytest

from streamtools import ConfigurationError, Limits, RetryPolicy
from streamtools._settings import policy


def test_defaults_are_one_each() -> None:
    assert RetryPolicy() == RetryPolicy(attempts=3, delay=1.0, max_delay=60.0)
    assert Limits() == Limits(max_message_size=1024 * 1024, max_in_flight=64)


def test_value_objects_are_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().attempts = 5  # type: ignore[misc]
    assert {RetryPolicy(), RetryPolicy()} == {RetryPolicy()}
    assert {Limits(), Limits(max_in_flight=1)} == {Limits(), Limits(max_in_flight=1)}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RetryPolicy(attempts=-1), "RetryPolicy: attempts must be an int >= 0, got -1"),
        (lambda: RetryPolicy(attempts=True), "RetryPolicy: attempts must be an int >= 0, got True"),
        (lambda: RetryPolicy(delay=-0.5), "RetryPolicy: delay must be seconds >= 0, got -0.5"),
        (
            lambda: RetryPolicy(delay=5, max_delay=1),
            "RetryPolicy: max_delay must be seconds >= delay (5.0), got 1.0",
        ),
        (lambda: Limits(max_message_size=0), "Limits: max_message_size must be an int >= 1, got 0"),
        (
            lambda: Limits(max_in_flight=cast(int, "8")),
            "Limits: max_in_flight must be an int >= 1, got '8'",
        ),
    ],
)
def test_a_bad_value_names_the_object_the_field_and_the_value(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make()  # type: ignore[operator]
    assert str(caught.value) == message


def test_seconds_are_floats() -> None:
    retry = RetryPolicy(delay=1, max_delay=2)
    assert (type(retry.delay), type(retry.max_delay)) == (float, float)


def test_old_keywords_warn_naming_the_new_spelling_and_still_work() -> None:
    with pytest.warns(DeprecationWarning, match="is deprecated") as record:
        retry, limits = policy(
            "SomeConsumer",
            RetryPolicy(),
            Limits(),
            {"max_retries": 5, "retry_delay": 0.1, "prefetch": 8, "max_message_size": None},
        )
    assert retry == RetryPolicy(attempts=5, delay=0.1)
    assert limits == Limits(max_in_flight=8)
    assert sorted(str(w.message) for w in record) == [
        "SomeConsumer: max_retries= is deprecated, pass retry=RetryPolicy(attempts=5) instead",
        "SomeConsumer: prefetch= is deprecated, pass limits=Limits(max_in_flight=8) instead",
        "SomeConsumer: retry_delay= is deprecated, pass retry=RetryPolicy(delay=0.1) instead",
    ]


def test_an_old_keyword_and_its_replacement_together_are_refused() -> None:
    with (
        pytest.warns(DeprecationWarning, match="is deprecated"),
        pytest.raises(ConfigurationError, match="not both"),
    ):
        policy("C", RetryPolicy(attempts=1), Limits(), {"max_retries": 5})
    with (
        pytest.warns(DeprecationWarning, match="is deprecated"),
        pytest.raises(ConfigurationError, match="same limit"),
    ):
        policy("C", RetryPolicy(), Limits(), {"prefetch": 5, "max_in_flight": 6})


def test_a_bad_old_keyword_is_refused_in_the_new_vocabulary() -> None:
    with (
        pytest.warns(DeprecationWarning, match="is deprecated"),
        pytest.raises(ConfigurationError) as caught,
    ):
        policy("C", RetryPolicy(), Limits(), {"max_retries": -1})
    assert str(caught.value) == "C: RetryPolicy: attempts must be an int >= 0, got -1"


def test_retry_and_limits_must_be_the_value_objects() -> None:
    with pytest.raises(ConfigurationError, match=r"^C: retry must be a RetryPolicy, got 3$"):
        policy("C", 3, Limits())
    with pytest.raises(ConfigurationError, match=r"^C: limits must be a Limits, got \{\}$"):
        policy("C", RetryPolicy(), {})
