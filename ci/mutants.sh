#!/usr/bin/env bash
# Shows that each checker is alive: builds deliberately broken tables (core/build.rs,
# LOCKCORE_MUTANT=NAME) and requires the named checker to FAIL on each. A mutant that survives its
# checker fails this script. Usage: ci/mutants.sh
#
#   grant_all  grants every request (mutual exclusion broken)
#   partial    a refused try_acquire keeps the keys that were free (all-or-nothing broken)
#   barging    new requests ignore queued waiters (fairness broken)
#   no_wake    releases wake nobody (lost wake-ups)
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
survivors=0

# expect_caught MUTANT DESCRIPTION COMMAND...: the command must fail when built with MUTANT.
expect_caught() {
  local mutant=$1 what=$2
  shift 2
  local log
  log=$(mktemp)
  if LOCKCORE_MUTANT=$mutant timeout 600 "$@" >"$log" 2>&1; then
    echo "SURVIVED: mutant $mutant passed $what"
    tail -20 "$log"
    survivors=$((survivors + 1))
  else
    local why
    why=$(grep -m1 -E "panicked at|deadlock|FAILED|error:" "$log" | cut -c1-140)
    echo "caught:   mutant $mutant by $what (${why:-exit status non-zero})"
  fi
  rm -f "$log"
}

t() { CARGO_TARGET_DIR=target/mutant cargo test -p lockcore "$@"; }
l() { RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom-mutant cargo test -p lockcore --release --test loom "$@"; }

expect_caught grant_all "the stress test's shadow checker" t --test stress
expect_caught grant_all "the proptest oracle"              t --test oracle
expect_caught grant_all "loom: opposite-order batches"     l opposite_orders_exclude_and_finish
expect_caught partial   "the proptest oracle"              t --test oracle
expect_caught partial   "loom: refused request keeps none" l refused_request_leaves_no_keys
expect_caught barging   "the API fairness tests"           t --test api
expect_caught barging   "the proptest oracle"              t --test oracle
expect_caught no_wake   "loom: release wakes a parked waiter" l guard_release_wakes_parked_waiter
expect_caught no_wake   "the stress test"                  t --test stress

if [ "$survivors" -ne 0 ]; then
  echo "$survivors mutant run(s) survived: a checker cannot see the bug it exists for"
  exit 1
fi
echo "every mutant was caught"
