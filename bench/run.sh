#!/usr/bin/env bash
# Builds bgwbench, and bgwpeers from the module bench/peers (go-plugin, kept
# out of the runtime's module), into a temporary directory and runs bgwbench
# with -peers pointing at bgwpeers and the given flags, e.g.
# `bash bench/run.sh -suite bridge -n 0.5` or `bash bench/run.sh -format json`.
# The bridge suite drives bgwpeers to print go-plugin beside the runtime in
# the same run. The benchmark's children are the same binary re-executed
# (/proc/self/exe), which is why it is built once here rather than run with
# `go run` from a cache path.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bgwbench" ./bench/cmd/bgwbench
(cd bench/peers && go build -o "$tmp/bgwpeers" ./cmd/bgwpeers)
"$tmp/bgwbench" -peers "$tmp/bgwpeers" "$@"
