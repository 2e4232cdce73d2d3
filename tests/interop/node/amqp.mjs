// A plain amqplib service. Queues are declared by the streamtools side: never asserted here.
//   node amqp.mjs send <url> <queue> <json array of messages>
//     publishes each with content-type application/json and a message id (no CloudEvents
//     headers), waits for the broker's confirms, prints {"sent": [message ids]}
//   node amqp.mjs receive <url> <queue> <count>
//     prints {"ready": true} once consuming, then {"body", "properties"} per message
import amqp from "amqplib";
import { bodies, emit, fail, text } from "./lib.mjs";

const [mode, url, queue, arg] = process.argv.slice(2);
const connection = await amqp.connect(url);
connection.on("error", fail);

if (mode === "send") {
  const channel = await connection.createConfirmChannel();
  const ids = [];
  for (const [n, body] of bodies(arg).entries()) {
    const messageId = `node-${process.pid}-${n}`;
    channel.sendToQueue(queue, Buffer.from(body, "utf8"), {
      contentType: "application/json",
      messageId,
      persistent: true,
    });
    ids.push(messageId);
  }
  await channel.waitForConfirms();
  emit({ sent: ids });
  await connection.close();
} else if (mode === "receive") {
  const count = Number(arg);
  const channel = await connection.createChannel();
  await channel.prefetch(count);
  let seen = 0;
  await channel.consume(queue, (msg) => {
    if (msg === null) fail(new Error(`the broker cancelled the consumer of ${queue}`));
    const { contentType, messageId, type, headers } = msg.properties;
    emit({
      body: msg.content.toString("utf8"),
      properties: { contentType, messageId, type, headers: text(headers) },
    });
    channel.ack(msg);
    seen += 1;
    if (seen === count) connection.close().then(() => process.exit(0), fail);
  });
  emit({ ready: true });
} else {
  fail(new Error(`unknown mode ${mode}`));
}
