#!/usr/bin/env bash
# Fails if code in core/src names atomics, parking_lot or std's locks anywhere but the sync shim,
# so that loom always runs the real primitives (see core/src/sync.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(grep -nE --exclude=sync.rs 'std::sync::atomic|parking_lot|std::sync::(Mutex|RwLock|Condvar)|std::thread::(park|current)' core/src/*.rs \
  | grep -vE "^[^:]+:[0-9]+: *//" || true)
if [ -n "$bad" ]; then
  echo "synchronisation primitives used outside core/src/sync.rs:"
  echo "$bad"
  exit 1
fi
echo "sync shim: only core/src/sync.rs names atomics and locks"
