#!/usr/bin/env bash
# `make compat`: are schemas/ compatible (full: backward and forward) with the last release?
# The baseline is the newest tag reachable from HEAD, else the merge base with main (else HEAD).
# An intended break is acknowledged by adding its line to schemas/compat-acknowledged.txt
# (empty that file after tagging the release that ships the break).
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMTOOLS=${STREAMTOOLS:-.venv/bin/streamtools}
SCHEMAS=${SCHEMAS:-schemas}
ACK=${ACK:-$SCHEMAS/compat-acknowledged.txt}

if base=$(git describe --tags --abbrev=0 2>/dev/null); then
    what="release tag $base"
elif base=$(git merge-base HEAD main 2>/dev/null || git merge-base HEAD origin/main 2>/dev/null); then
    what="merge base with main ($(git rev-parse --short "$base"))"
else
    base=HEAD
    what="HEAD"
fi
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
if git cat-file -e "$base:$SCHEMAS" 2>/dev/null; then
    git archive "$base" "$SCHEMAS" | tar -x -C "$old"
else
    mkdir -p "$old/$SCHEMAS"  # no schemas then: everything is new, nothing can break
fi
echo "compat: $SCHEMAS/ against $what"
# shellcheck disable=SC2086  # STREAMTOOLS may be a command with arguments ("python -m streamtools")
$STREAMTOOLS compat "$old/$SCHEMAS" "$SCHEMAS" --mode full --acknowledge "$ACK"
