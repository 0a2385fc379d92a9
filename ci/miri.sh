#!/usr/bin/env bash
# Miri over the table's unit tests, the direct-grant tests and the proptest oracle (which scales
# itself down under miri: 2 cases of at most 12 operations, 2 shards; about 5 minutes here).
# lockcore's unsafe code is the shard latch (core/src/latch.rs: lock_api's RawMutex and
# parking_lot_core's park/unpark), whose unit tests run here with 3 contending threads, and the
# direct grants' cells (core/src/direct.rs: an UnsafeCell a request writes before its grant is
# published and latch holders read after claiming it), which tests/direct.rs drives across threads
# (a release on another thread, a waiter woken by a direct release, claims, snapshots, tickets);
# the rest checks the unsafe in the dependencies lockcore drives (parking_lot_core, hashbrown,
# smallvec) on our paths. Needs the nightly toolchain with the miri component: when it
# is missing and cannot be installed, says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "miri: SKIPPED (no nightly toolchain on this machine)"
  exit 0
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup +nightly component add miri rust-src >/dev/null 2>&1 || true
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "miri: SKIPPED (the miri component could not be installed)"
  exit 0
fi
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
# Left to the native run and loom: the read bias (core/src/bias.rs, safe code, four loom models),
# the oracle's read-biased families, and two direct-grant tests that exercise no unsafe path of
# their own (tokens across many grants, keys that own memory; 50 s under miri).
CARGO_TARGET_DIR=target/miri cargo +nightly miri test -p lockcore --lib --test oracle --test direct "$@" -- \
  --skip read_biased --skip tokens_increase_across --skip keys_that_own_memory
