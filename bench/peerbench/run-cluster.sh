#!/usr/bin/env bash
# Measures a 3-node batpak cluster (server/cluster, raft over loopback TCP)
# side by side with a 3-node NATS JetStream cluster (R3 stream, loopback
# routes), in one run of the peerbench harness (../shared/peerbench, or
# $PEERBENCH): the harness is copied to a scratch directory, this
# directory's adapter_batpak_r3.go is added, and the harness's batpak
# dependency points at this checkout.
# usage: bench/peerbench/run-cluster.sh [peerbench flags...]
#   default: durable single appends from 64 producers, then durable batches
#   of 100 from 8 producers (3 interleaved rounds each, medians reported)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proj=$(cd "$here/../.." && pwd)
harness=${PEERBENCH:-}
if [ -z "$harness" ]; then
  for d in "$proj/../shared/peerbench" "$proj/../../shared/peerbench"; do
    if [ -d "$d" ]; then harness=$d; break; fi
  done
fi
[ -n "$harness" ] || { echo "run-cluster.sh: peerbench harness not found; set PEERBENCH" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$harness"/. "$work"/
chmod -R u+w "$work"
cp "$here"/adapter_batpak_r3.go "$work"/
cd "$work"
go mod edit -replace=github.com/batpak-go/batpak="$proj"
go mod tidy >/dev/null 2>&1 || true
if [ $# -gt 0 ]; then
  exec go run -tags peerbench . -json "${PEERBENCH_JSON:--}" -adapters batpak-r3,jetstream-r3 "$@"
fi
go run -tags peerbench . -json "${PEERBENCH_JSON:--}" -adapters batpak-r3,jetstream-r3 -workload durable -producers 64
go run -tags peerbench . -json "${PEERBENCH_JSON:--}" -adapters batpak-r3,jetstream-r3 -workload batch -producers 8
