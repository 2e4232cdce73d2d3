#!/usr/bin/env bash
# Install the official AsyncAPI parser (npm @asyncapi/parser) into a cache folder once and print
# that folder. Default: .venv/asyncapi-parser (removed with the venv); ASYNCAPI_PARSER_DIR overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.6.3
DIR=${ASYNCAPI_PARSER_DIR:-$PWD/.venv/asyncapi-parser}
if [ ! -f "$DIR/node_modules/@asyncapi/parser/package.json" ] ||
    ! grep -q "\"version\": \"$VERSION\"" "$DIR/node_modules/@asyncapi/parser/package.json"; then
    mkdir -p "$DIR"
    (cd "$DIR" && [ -f package.json ] || echo '{"private": true}' > package.json)
    npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "@asyncapi/parser@$VERSION" >&2
fi
echo "$DIR"
