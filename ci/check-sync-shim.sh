#!/usr/bin/env bash
# Fails if code in core/src names atomics, parking_lot or std's locks anywhere but the sync shim,
# so that loom always runs the real primitives (see core/src/sync.rs). latch.rs is the shard latch
# itself, which the shim re-exports (under loom, loom's mutex stands in for it).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(grep -nE --exclude=sync.rs --exclude=latch.rs 'std::sync::atomic|parking_lot|std::sync::(Mutex|RwLock|Condvar)|std::thread::(park|current)' core/src/*.rs \
  | grep -vE "^[^:]+:[0-9]+: *//" || true)
if [ -n "$bad" ]; then
  echo "synchronisation primitives used outside core/src/sync.rs:"
  echo "$bad"
  exit 1
fi
echo "sync shim: only core/src/sync.rs and the latch (core/src/latch.rs) name atomics and locks"
