#!/usr/bin/env bash
# Miri over the table's unit tests and the proptest oracle (which scales itself down under miri:
# 4 cases of at most 12 operations, 2 shards; about 6 minutes here). lockcore's only unsafe code is
# the shard latch (core/src/latch.rs: lock_api's RawMutex and parking_lot_core's park/unpark), whose
# unit tests run here with 3 contending threads; the rest checks the unsafe in the dependencies
# lockcore drives (parking_lot_core, hashbrown, smallvec) on our paths. Needs the nightly toolchain with the miri component: when it
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
# The read bias (core/src/bias.rs) is safe code: its own tests run here, and the oracle's
# read-biased families (the same operations again, minutes under miri) are left to the native run.
CARGO_TARGET_DIR=target/miri cargo +nightly miri test -p lockcore --lib --test oracle --test bias "$@" -- --skip read_biased
