// A plain kafkajs service. Topics are created by the streamtools side.
//   node kafka.mjs send <brokers> <topic> <json array of messages>
//     produces each with a content-type application/json header (no CloudEvents headers),
//     acks from all replicas, prints {"sent": n}
//   node kafka.mjs receive <brokers> <topic> <count> <group>
//     reads the topic from the beginning in its own consumer group, prints {"ready": true}
//     once running, then {"body", "key", "headers"} per record
import { Kafka, logLevel } from "kafkajs";
import { bodies, emit, fail, text } from "./lib.mjs";

const [mode, brokers, topic, arg, group] = process.argv.slice(2);
// kafkajs logs through console.* (stdout): warnings and errors go to stderr instead.
const logCreator =
  () =>
  ({ namespace, level, log }) => {
    const { message, ...extra } = log;
    process.stderr.write(`kafkajs ${level} ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
  };
const kafka = new Kafka({
  clientId: "interop-node",
  brokers: brokers.split(","),
  logLevel: logLevel.WARN,
  logCreator,
  retry: { retries: 8 },
});

if (mode === "send") {
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = bodies(arg).map((value) => ({
    value,
    headers: { "content-type": "application/json" },
  }));
  await producer.send({ topic, acks: -1, messages });
  emit({ sent: messages.length });
  await producer.disconnect();
} else if (mode === "receive") {
  const count = Number(arg);
  const consumer = kafka.consumer({ groupId: group, allowAutoTopicCreation: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  consumer.on(consumer.events.GROUP_JOIN, () => emit({ ready: true }));
  await consumer.run({
    eachMessage: async ({ message }) => {
      emit({
        body: message.value.toString("utf8"),
        key: message.key === null ? null : message.key.toString("utf8"),
        headers: text(message.headers),
      });
      seen += 1;
      if (seen === count) setImmediate(() => consumer.disconnect().then(() => process.exit(0), fail));
    },
  });
} else {
  fail(new Error(`unknown mode ${mode}`));
}
