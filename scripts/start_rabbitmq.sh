#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672 (what the tests use), starting a local node if not.
# Used by .ci/run; a developer can run it before `make test` too.
set -euo pipefail

broker_up() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; }

if ! broker_up; then
    echo "ci: RabbitMQ is not answering on 127.0.0.1:5672; starting rabbitmq-server -detached"
    rabbitmq-server -detached || true
    for _ in $(seq 1 90); do
        broker_up && break
        sleep 1
    done
    broker_up || { echo "ci: RabbitMQ did not come up on 127.0.0.1:5672 within 90 s" >&2; exit 1; }
fi
# the port opens before the node is ready to accept AMQP sessions
if command -v rabbitmqctl >/dev/null; then
    timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || echo "ci: rabbitmqctl await_startup did not confirm; continuing"
fi
echo "ci: RabbitMQ answers on 127.0.0.1:5672"
