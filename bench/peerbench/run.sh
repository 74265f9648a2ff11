#!/usr/bin/env bash
# Measures `batpak serve` over loopback HTTP side by side with NATS
# JetStream over loopback TCP (sync_interval: always), in one run of the
# peerbench harness (../shared/peerbench, or $PEERBENCH): the harness is
# copied to a scratch directory, this directory's adapter is added, and the
# batpak binary is built from this checkout.
# usage: bench/peerbench/run.sh [peerbench flags...]
#   default: durable single appends from 8 and 64 producers, then durable
#   batches of 100 from 8 producers
# With BATPAK_PEERBENCH=cluster (run-cluster.sh) it measures a 3-node batpak
# cluster (adapter_batpak_r3.go: server/cluster over loopback TCP) beside a
# 3-node JetStream cluster (R3 stream, loopback routes) instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proj=$(cd "$here/../.." && pwd)
harness=${PEERBENCH:-}
if [ -z "$harness" ]; then
  for d in "$proj/../shared/peerbench" "$proj/../../shared/peerbench"; do
    if [ -d "$d" ]; then harness=$d; break; fi
  done
fi
[ -n "$harness" ] || { echo "run.sh: peerbench harness not found; set PEERBENCH" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$harness"/. "$work"/
chmod -R u+w "$work"
if [ "${BATPAK_PEERBENCH:-}" = cluster ]; then
  cp "$here"/adapter_batpak_r3.go "$work"/
  adapters=batpak-r3,jetstream-r3 durable=64
else
  cp "$here"/adapter_batpak_http.go "$work"/
  (cd "$proj" && go build -o "$work/batpak" ./cmd/batpak)
  export BATPAK_BIN="$work/batpak"
  adapters=batpak-http,jetstream-tcp durable=8,64
fi
cd "$work"
go mod edit -replace=github.com/batpak-go/batpak="$proj"
go mod tidy >/dev/null 2>&1 || true
json=${PEERBENCH_JSON:--}
if [ $# -gt 0 ]; then
  exec go run -tags peerbench . -json "$json" -adapters "$adapters" "$@"
fi
go run -tags peerbench . -json "$json" -adapters "$adapters" -workload durable -producers "$durable"
go run -tags peerbench . -json "$json" -adapters "$adapters" -workload batch -producers 8
