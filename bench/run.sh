#!/usr/bin/env bash
# Builds bgwbench, and bgwpeers from the module bench/peers (go-plugin, kept
# out of the runtime's module), into a temporary directory and runs bgwbench
# with -peers pointing at bgwpeers and the given flags, e.g.
# `bash bench/run.sh -suite bridge -n 0.5` or `bash bench/run.sh -format json`.
# The bridge suite drives bgwpeers to print go-plugin beside the runtime in
# the same run. The benchmark's children are the same binary re-executed
# (/proc/self/exe), which is why it is built once here rather than run with
# `go run` from a cache path.
#
# The suite "cluster" is a binary of its own, bgwclusterbench, so that
# bgwbench and its children link no grpc: `-suite cluster` runs it alone,
# and `-suite bridge,cluster` runs bgwbench with the other suites, then it
# (with -format json: bgwbench's array, then the cluster's, each with ids).
# It is not part of a run without -suite.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=() suites="" cluster=0
while [ $# -gt 0 ]; do
  case "$1" in
    -suite|--suite) suites="$2"; shift 2 ;;
    -suite=*|--suite=*) suites="${1#*=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$suites" ]; then
  rest=()
  IFS=, read -ra list <<<"$suites"
  for s in "${list[@]}"; do
    if [ "$s" = cluster ]; then cluster=1; else rest+=("$s"); fi
  done
  suites=$(IFS=,; echo "${rest[*]:-}")
fi
if [ "$cluster" = 0 ] || [ -n "$suites" ]; then
  go build -o "$tmp/bgwbench" ./bench/cmd/bgwbench
  (cd bench/peers && go build -o "$tmp/bgwpeers" ./cmd/bgwpeers)
  if [ -n "$suites" ]; then
    "$tmp/bgwbench" -peers "$tmp/bgwpeers" -suite "$suites" ${args[@]+"${args[@]}"}
  else
    "$tmp/bgwbench" -peers "$tmp/bgwpeers" ${args[@]+"${args[@]}"}
  fi
fi
if [ "$cluster" = 1 ]; then
  go build -o "$tmp/bgwclusterbench" ./bench/cmd/bgwclusterbench
  "$tmp/bgwclusterbench" ${args[@]+"${args[@]}"}
fi
