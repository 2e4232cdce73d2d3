// Validate AsyncAPI documents with the official parser: node scripts/validate_asyncapi.mjs FILE...
// Prints every diagnostic as one JSON line ({file, severity, code, message, path}); exits 1 if
// any is an error (severity 0). The parser comes from NODE_PATH or scripts/asyncapi.sh's cache.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const cache = process.env.ASYNCAPI_PARSER_DIR;
const require = createRequire(cache ? join(cache, "package.json") : import.meta.url);
const { Parser } = require("@asyncapi/parser");

const parser = new Parser();
let errors = 0;
for (const file of process.argv.slice(2)) {
  const diagnostics = await parser.validate(readFileSync(file, "utf8"), { source: file });
  for (const d of diagnostics) {
    if (d.severity === 0) errors += 1;
    console.log(JSON.stringify({ file, severity: d.severity, code: d.code, message: d.message, path: d.path }));
  }
}
process.exit(errors ? 1 : 0);
