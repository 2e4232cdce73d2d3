// A plain Node.js HTTP service: fetch() to post, node:http to be posted to.
//   node http.mjs send <url> <json array of messages>
//     POSTs each as content-type application/json (no CloudEvents headers), prints
//     {"status", "contentType", "body"} per answer
//   node http.mjs serve <count>
//     listens on 127.0.0.1 (a free port), prints {"port"}, then {"method", "url",
//     "headers", "body"} per request, answering 204; exits after <count> requests
import { createServer } from "node:http";
import { bodies, emit, fail } from "./lib.mjs";

const [mode, ...args] = process.argv.slice(2);

if (mode === "send") {
  const [url, messages] = args;
  for (const body of bodies(messages)) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    emit({
      status: response.status,
      contentType: response.headers.get("content-type"),
      body: await response.text(),
    });
  }
} else if (mode === "serve") {
  const count = Number(args[0]);
  let seen = 0;
  const server = createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("error", fail);
    request.on("end", () => {
      emit({
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      seen += 1;
      const last = seen === count;
      response.writeHead(204).end(() => last && process.exit(0));
    });
  });
  server.on("error", fail);
  server.listen(0, "127.0.0.1", () => emit({ port: server.address().port }));
} else {
  fail(new Error(`unknown mode ${mode}`));
}
