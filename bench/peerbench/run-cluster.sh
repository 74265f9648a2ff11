#!/usr/bin/env bash
# Measures a 3-node batpak cluster (server/cluster, raft over loopback TCP)
# side by side with a 3-node NATS JetStream cluster (R3 stream, loopback
# routes), in one run of the peerbench harness: see run.sh.
# usage: bench/peerbench/run-cluster.sh [peerbench flags...]
#   default: durable single appends from 64 producers, then durable batches
#   of 100 from 8 producers (3 interleaved rounds each, medians reported)
BATPAK_PEERBENCH=cluster exec "$(dirname "$0")/run.sh" "$@"
