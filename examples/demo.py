"""`make demo`: push orders through the example services and print what happens.

QUEUE_TYPE picks the transport (default HTTPHandler):
- HTTPHandler: billing runs as its own process on a loopback port; no broker needed.
- RMQIOHandler: billing runs as its own process; messages go through RabbitMQ (RMQ_* env).
- MemoryHandler: everything in this process on the embedded memory broker.
- KafkaHandler: billing runs as its own process; messages go through Kafka
  (KAFKA_BOOTSTRAP_SERVERS, else the bundled Tansu broker, started for the demo).
The demo process places the orders and plays the ledger that receives the invoices.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable

from examples.contracts import BILLING_INVOICED, ORDERS_CREATED, InvoiceIssued
from examples.orders import make_order
from streamtools import (
    CONSUMER_LOOPS,
    HTTP,
    KAFKA,
    MEMORY,
    PRODUCERS,
    ConsumerRunner,
    ValidationError,
)

ORDERS = int(os.environ.get("DEMO_ORDERS", "300"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def progress(done: int, total: int, started: float) -> None:
    """Redraw the progress bar in 10% steps (one line per step when not on a terminal)."""
    if done != total and done * 10 // total == (done - 1) * 10 // total:
        return
    width = 30
    filled = width * done // total
    rate = done / max(time.perf_counter() - started, 1e-9)
    tty = sys.stdout.isatty()
    end = "\n" if done == total or not tty else ""
    print(
        f"{chr(13) if tty else ''}  [{'#' * filled}{'.' * (width - filled)}] "
        f"{done:>4}/{total} invoices ({rate:,.0f}/s)",
        end=end,
        flush=True,
    )


async def start_billing(
    queue_type: str, billing_port: int, ledger_port: int
) -> Callable[[], Awaitable[int]]:
    """Start the billing service; return a coroutine function that stops it (its exit code)."""
    if queue_type == MEMORY:
        import examples.billing as billing

        runner = ConsumerRunner(billing.consumers.instances, billing.consumers.handlers)
        runner.on_shutdown.append(billing.invoices.close)
        task = asyncio.create_task(runner.serve())
        while not all(c.serving for c in billing.consumers.instances.values()):
            if task.done():
                await task
            await asyncio.sleep(0.01)

        async def stop_in_process() -> int:
            runner.stop()
            await task
            return 0

        return stop_in_process

    env = dict(
        os.environ,
        QUEUE_TYPE=queue_type,
        BILLING_PORT=str(billing_port),
        LEDGER_PORT=str(ledger_port),
        PYTHONUNBUFFERED="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.billing", env=env
    )
    if queue_type == HTTP:
        await wait_healthy(billing_port, process)

    async def stop_process() -> int:
        process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), 30)

    return stop_process


async def wait_healthy(port: int, process: asyncio.subprocess.Process) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.returncode is not None:
                raise SystemExit(f"demo: billing exited with {process.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("demo: billing did not become healthy within 15 s")


async def main(queue_type: str, count: int = ORDERS) -> int:
    billing_port, ledger_port = free_port(), free_port()
    ledger_settings: dict[str, object] = (
        {"host": "127.0.0.1", "port": ledger_port} if queue_type == HTTP else {}
    )
    order_settings: dict[str, object] = (
        {"host": "127.0.0.1", "port": billing_port} if queue_type == HTTP else {}
    )
    print(f"demo: {count} orders through billing over {queue_type}")
    ledger = CONSUMER_LOOPS[queue_type](BILLING_INVOICED, **ledger_settings)
    sent: set[object] = set()
    invoiced: dict[object, InvoiceIssued] = {}
    started = time.perf_counter()
    all_in = asyncio.Event()

    @ledger()
    async def on_invoice(invoice: InvoiceIssued) -> None:
        # A broker may still hold invoices of an earlier run: count this run's only.
        if invoice.order_id in sent and invoice.order_id not in invoiced:
            invoiced[invoice.order_id] = invoice
            progress(len(invoiced), count, started)
            if len(invoiced) == count:
                all_in.set()

    await ledger.start()
    stop_billing = await start_billing(queue_type, billing_port, ledger_port)
    rejected = 0
    code = 0
    try:
        async with PRODUCERS[queue_type](ORDERS_CREATED, **order_settings) as orders:
            # A wrong message is the sender's error, named by field, before anything leaves.
            broken = make_order(-1)
            broken.items[0].quantity = 0
            try:
                await orders.send(broken)
            except ValidationError as exc:
                rejected += 1
                print(f"  rejected at the sender: {exc.path}: quantity must be >= 1")
            window = 32
            for start in range(0, count, window):
                batch = [make_order(seq) for seq in range(start, min(start + window, count))]
                sent.update(order.order_id for order in batch)
                await asyncio.gather(*(orders.send(order) for order in batch))
        try:
            async with asyncio.timeout(60):
                await all_in.wait()
        except TimeoutError:
            print(f"\ndemo: only {len(invoiced)} of {count} invoices arrived", file=sys.stderr)
            code = 1
    finally:
        billing_exit = await stop_billing()
        await ledger.close()
    elapsed = time.perf_counter() - started
    total = sum(invoice.total for invoice in invoiced.values())
    print(
        f"demo ({queue_type}): sent {len(sent)}, handled {len(invoiced)}, rejected {rejected}, "
        f"invoiced {total:,.2f} in {elapsed:.2f} s; billing stopped with exit code {billing_exit}"
    )
    return code or billing_exit


def run(queue_type: str) -> int:
    if queue_type in CONSUMER_LOOPS and CONSUMER_LOOPS[queue_type] is CONSUMER_LOOPS[KAFKA]:
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            from examples.tansu import TansuBroker

            with TansuBroker() as broker:
                print(f"demo: started the bundled Kafka broker on {broker.bootstrap_servers}")
                os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
                return asyncio.run(main(KAFKA))
        return asyncio.run(main(KAFKA))
    return asyncio.run(main(queue_type))


if __name__ == "__main__":
    raise SystemExit(run(os.environ.get("QUEUE_TYPE", HTTP)))
