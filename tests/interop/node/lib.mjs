// What the interop peers share: one JSON object per stdout line for the Python test to read,
// failures on stderr with a non-zero exit (so a broken peer fails the test, never hangs it).

export function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

export function fail(error) {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1);
}

process.on("unhandledRejection", fail);
process.on("uncaughtException", fail);

// The messages to send: a JSON array in argv, each item an object (serialised here with
// JSON.stringify, as any Node service would) or a string sent as it is.
export function bodies(arg) {
  return JSON.parse(arg).map((m) => (typeof m === "string" ? m : JSON.stringify(m)));
}

// Header values as text (amqplib gives Buffers, numbers or strings; kafkajs Buffers).
export function text(headers) {
  const out = {};
  for (const [key, value] of Object.entries(headers ?? {})) {
    if (value === undefined || value === null) continue;
    out[key] = Buffer.isBuffer(value) ? value.toString("utf8") : String(value);
  }
  return out;
}
