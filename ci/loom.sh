#!/usr/bin/env bash
# Loom model checks of the real table (core/tests/loom.rs) and of path locks on it
# (core/tests/loom_path.rs). Usage: ci/loom.sh [extra cargo test args]
# LOOM_MAX_PREEMPTIONS bounds the schedules explored (3 in CI; LOOM_MAX_PREEMPTIONS=none explores
# every schedule, about 6 s for the whole file on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-none}"
[ "$LOOM_MAX_PREEMPTIONS" = none ] && unset LOOM_MAX_PREEMPTIONS
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p lockcore --release --test loom --test loom_path "$@"
