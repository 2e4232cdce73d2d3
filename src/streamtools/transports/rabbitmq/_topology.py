"""The queues a RabbitMQ queue name needs, and their arguments: the same for every peer."""

from __future__ import annotations

from streamtools.transports.rabbitmq._settings import QueueType


def _topology(
    name: str, queue_type: QueueType, retries: int
) -> list[tuple[str, dict[str, object]]]:
    """(queue, arguments) for everything that `name` needs; the same for every peer."""
    typed: dict[str, object] = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    # At-least-once dead-lettering (quorum only) keeps a message until its target confirms it.
    safe_dlx: dict[str, object] = (
        {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        if queue_type == "quorum"
        else {}
    )
    if name.endswith(".dlq"):
        declared = [(name, dict(typed))]
    else:
        main = {
            **typed,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{name}.dlq",
            **safe_dlx,
        }
        declared = [(name, main), (f"{name}.dlq", dict(typed))]
    for n in range(1, retries + 1):
        delay = {
            **typed,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": name,
            **safe_dlx,
        }
        declared.append((f"{name}.retry.{n}", delay))
    return declared
