"""ECMA-262 regular expressions (what JSON Schema's `pattern` is) as Python `re` patterns.

msgspec checks `Meta(pattern=...)` with Python's `re.search`. The two dialects differ where it
matters for validation: `\\d` and `\\w` match non-ASCII digits and letters in Python, `$` also
matches before a trailing newline, `.` matches `\\r`, `\\u2028` and `\\u2029`. A pattern is
translated when every construct in it has an exact Python spelling; otherwise `to_python`
returns None, and the contract leaves `pattern` to the JSON Schema validator (which follows
ECMA-262 itself).
"""

from __future__ import annotations

import re
import warnings

_DIGIT = "0-9"
_WORD = "a-zA-Z0-9_"
_SIMPLE_ESCAPES = frozenset("tnrfv0")  # \0 is NUL when no digit follows
_UNSAFE_IN_CLASS = frozenset("DWsSbBpPkc")


def to_python(pattern: str) -> str | None:
    """The Python spelling of ECMA-262 `pattern` (non-unicode-set mode), or None."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n:
                return None
            escaped = _escape(pattern, i, in_class)
            if escaped is None:
                return None
            text, width = escaped
            out.append(text)
            i += width
            continue
        if in_class:
            if char == "]":
                in_class = False
            elif char == "[":
                char = "\\["  # literal in ECMA; a FutureWarning (nested set) in Python
            elif (char == "&" and pattern.startswith("&&", i)) or (
                char == "~" and pattern.startswith("~~", i)
            ):
                return None  # Python warns on set operations it may add later
            out.append(char)
            i += 1
            continue
        if char == "[":
            rest = pattern[i + 1 :]
            if rest.startswith("]") or rest.startswith("^]"):
                return None  # ECMA's empty class and [^]; Python reads ] as a literal there
            in_class = True
            out.append("[")
            if rest.startswith("^"):
                out.append("^")
                i += 1
            i += 1
            continue
        if char == ".":
            out.append("[^\\n\\r\\u2028\\u2029]")
        elif char == "$":
            out.append("\\Z")
        elif char == "(" and pattern.startswith("(?", i):
            if pattern.startswith(("(?:", "(?=", "(?!", "(?<=", "(?<!"), i):
                out.append("(")
            elif pattern.startswith("(?<", i):
                out.append("(?P")  # a named group: (?<name>...) -> (?P<name>...)
                i += 2
                continue
            else:
                return None  # inline flags and the like are not ECMA-262
        else:
            out.append(char)
        i += 1
    if in_class:
        return None
    translated = "".join(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            re.compile(translated)
        except (re.error, FutureWarning, DeprecationWarning):
            return None
    return translated


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int] | None:
    """The Python text for the escape at `pattern[i]` and how many characters it took."""
    letter = pattern[i + 1]
    if in_class and letter in _UNSAFE_IN_CLASS:
        return None
    if letter == "d":
        return (_DIGIT if in_class else f"[{_DIGIT}]"), 2
    if letter == "D":
        return f"[^{_DIGIT}]", 2
    if letter == "w":
        return (_WORD if in_class else f"[{_WORD}]"), 2
    if letter == "W":
        return f"[^{_WORD}]", 2
    if letter in "sSbBpPkc":
        return None  # whitespace and word boundaries differ; property escapes; \k; \c
    if letter == "u":
        hex4 = pattern[i + 2 : i + 6]
        if len(hex4) == 4 and all(c in "0123456789abcdefABCDEF" for c in hex4):
            return f"\\u{hex4}", 6
        return None
    if letter == "x":
        hex2 = pattern[i + 2 : i + 4]
        if len(hex2) == 2 and all(c in "0123456789abcdefABCDEF" for c in hex2):
            return f"\\x{hex2}", 4
        return None
    if letter == "0":
        if i + 2 < len(pattern) and pattern[i + 2].isdigit():
            return None
        return "\\x00", 2
    if letter.isdigit():
        return (None if in_class else (f"\\{letter}", 2)) if letter != "0" else None
    if letter in _SIMPLE_ESCAPES:
        return f"\\{letter}", 2
    if letter.isalnum():
        return None  # an identity escape of a letter: an error in unicode mode, unclear here
    return re.escape(letter), 2
