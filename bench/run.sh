#!/usr/bin/env bash
# Builds bgwbench into a temporary directory and runs it with the given
# flags, e.g. `bash bench/run.sh -suite bridge -n 0.5`. The benchmark's
# children are the same binary re-executed (/proc/self/exe), which is why it
# is built once here rather than run with `go run` from a cache path.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bgwbench" ./bench/cmd/bgwbench
"$tmp/bgwbench" "$@"
