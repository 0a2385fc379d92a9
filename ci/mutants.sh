#!/usr/bin/env bash
# Shows that each checker is alive: builds deliberately broken tables (core/build.rs,
# LOCKCORE_MUTANT=NAME) and requires the named checker to FAIL on each. A mutant that survives its
# checker fails this script.
#
# Usage: ci/mutants.sh         every mutant against one checker, and every checker against at
#                              least one mutant (what CI runs)
#        ci/mutants.sh --all   every mutant against every checker meant to catch it
#
# Mutants build in the target dirs the tests and loom already use (target/, target/loom):
# switching LOCKCORE_MUTANT rebuilds the crates that read it and nothing else, and the next
# normal build rebuilds them once more.
#
#   grant_all  grants every request (mutual exclusion broken)
#   partial    a refused try_acquire keeps the keys that were free (all-or-nothing broken)
#   barging    new requests ignore queued waiters (fairness broken)
#   no_wake    releases wake nobody (lost wake-ups)
#   lost_count one shared holder's release marks the key free of every shared holder
#   latch_no_wake          the shard latch unlocks without waking a sleeper (lost wake-up)
#   latch_try_ignores_lock the shard latch's try_lock takes a held latch (no exclusion)
#   latch_lost_handover    the shard latch unlocks while handing itself to a starving sleeper
#   bias_no_revoke  revoking a read bias leaves its fast holders out of the record (a writer is
#                   granted beside readers that took the key on their reader slots)
#   bias_no_fence   a fast reader checks the bias words without the SeqCst fence after
#                   publishing its tentative grant (a revoker and a reader can miss each other)
#   bias_no_abort   a revocation leaves tentative fast grants alone (one turns held unseen)
#   bias_free_pinned  a fast grant's release frees its cell while a revoker is reading it
#   bias_visit_relaxed  a revoker reads a given-up cell's state Relaxed: the reader's critical
#                       section is not ordered before the writer's (a data race on guarded data)
#   direct_unclaimed  latch holders ignore direct grants (a batch is granted beside a direct holder)
#   direct_dropped    a claim of a direct word forgets the grant it was moving into the record
#   direct_blind      a direct request swaps its word in whatever it held (takes a claimed word)
#   direct_no_abort   a claim leaves a tentative direct batch alone (it turns held unseen)
#   direct_release_relaxed  a direct release's exchange is Relaxed: the next holder's critical
#                           section is not ordered after this one's (a data race on guarded data)
#   skip_keep_record     Durable::keep acknowledges a ticket it never journaled (lost locks)
#   skip_release_record  Durable::end releases without journaling it (stale locks after a restart)
#   no_epoch_floor       recovery does not lift fencing tokens above the previous runs'
#   no_sync              the journal acknowledges commits before any fsync (lost on power loss)
#   no_intention  path locks take no intention lock on ancestors (a subtree lock misses locks below)
#   sql_grant_all      the database backend grants whatever the holders (mutual exclusion broken)
#   sql_no_token_bump  the database backend hands every exclusive grant token 1 (fencing broken)
#   sql_no_expiry      acquisitions do not remove lapsed holders (a dead server's locks stay)
#   sql_no_notify      PostgreSQL releases send no NOTIFY (waiters sleep out their backoff)
#   sql_repeatable_read  MySQL sessions stay REPEATABLE READ: a request's later keys are read
#                        from a snapshot older than their row locks
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
survivors=0
all=0
case "${1:-}" in
  --all) all=1 ;;
  "") ;;
  *) echo "usage: ci/mutants.sh [--all]" >&2; exit 2 ;;
esac

# expect_caught MUTANT DESCRIPTION test|model|loom|loom_path CARGO-TEST-ARGS...: the tests must FAIL when built with
# MUTANT, and fail as tests (a panic, a failed test or a loom deadlock), not because of a build
# error: a checker that cannot even build proves nothing.
expect_caught() {
  local mutant=$1 what=$2 kind=$3
  shift 3
  local log
  log=$(mktemp)
  local status=0 t0=$SECONDS
  if [ "$kind" = crashtest ]; then
    LOCKCORE_MUTANT=$mutant \
      timeout 600 cargo run -q -p lockcore-cli -- crashtest "$@" >"$log" 2>&1 || status=$?
    # The harness reports, and fails on, what it found: turn that into the verdict below.
    grep -qE "(lost|stale|unreadable)=[1-9]|fencing violations=[1-9]|the child failed by itself" "$log" && echo "panicked at: $(tail -1 "$log")" >>"$log"
  elif [ "$kind" = model ]; then
    LOCKCORE_MUTANT=$mutant \
      timeout 600 cargo test -p lockcore-model "$@" >"$log" 2>&1 || status=$?
  elif [ "$kind" = sql ]; then
    # Needs PostgreSQL and MariaDB (ci/sql.sh --check).
    LOCKCORE_MUTANT=$mutant \
      timeout 600 cargo test -p lockcore-sql "$@" >"$log" 2>&1 || status=$?
  elif [ "$kind" = journal ]; then
    LOCKCORE_MUTANT=$mutant \
      timeout 600 cargo test -p lockcore-journal "$@" >"$log" 2>&1 || status=$?
  elif [ "$kind" = loom ] || [ "$kind" = loom_path ]; then
    LOCKCORE_MUTANT=$mutant RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
      timeout 600 cargo test -p lockcore --release --test "$kind" "$@" >"$log" 2>&1 || status=$?
  else
    LOCKCORE_MUTANT=$mutant \
      timeout 600 cargo test -p lockcore "$@" >"$log" 2>&1 || status=$?
  fi
  if [ "$status" -eq 0 ]; then
    echo "SURVIVED: mutant $mutant passed $what ($((SECONDS - t0)) s)"
    survivors=$((survivors + 1))
  elif grep -qE "test result: FAILED|panicked at|deadlock" "$log"; then
    local why
    why=$(grep -m1 -E "panicked at|deadlock|Test failed|assertion" "$log" | cut -c1-150)
    echo "caught:   mutant $mutant by $what ($((SECONDS - t0)) s): ${why:-a test failed}"
  elif grep -qE "process didn't exit successfully: .*\(signal: (6|7|11), SIG(ABRT|BUS|SEGV)" "$log"; then
    # A mutant that breaks exclusion lets two threads edit one record at once: the test binary
    # may die of the corrupted memory before any assertion runs. That is the checker failing,
    # not a build error (one run in a few of the stress test against latch_try_ignores_lock).
    echo "caught:   mutant $mutant by $what: the test binary crashed: $(grep -m1 -oE 'signal: [0-9]+, SIG[A-Z]+' "$log")"
  elif [ "$status" -eq 124 ]; then
    echo "caught:   mutant $mutant by $what: hung until the 600 s timeout"
  else
    echo "ERROR:    mutant $mutant with $what failed without a test failing (build error?):"
    tail -15 "$log"
    survivors=$((survivors + 1))
  fi
  rm -f "$log"
}

# One run per mutant, and each checker against at least one (CI); `also`: a further checker of a
# mutant already shown caught (--all only).
also() { [ "$all" -eq 1 ] && expect_caught "$@"; return 0; }

expect_caught grant_all "the stress test's shadow checker"      test --test stress
also          grant_all "the proptest oracle"                   test --test oracle
also          grant_all "loom: opposite-order batches"          loom opposite_orders_exclude_and_finish
expect_caught partial   "the proptest oracle"                   test --test oracle
expect_caught partial   "loom: a refused request keeps no key"  loom refused_request_leaves_no_keys
expect_caught barging   "the API fairness tests"                test --test api
also          barging   "the proptest oracle"                   test --test oracle
expect_caught lost_count "the proptest oracle"                  test --test oracle
also          lost_count "the stress test's shadow checker"     test --test stress
expect_caught latch_no_wake          "the latch's contention test" test --lib latch::
expect_caught latch_try_ignores_lock "the latch's contention test" test --lib latch::
expect_caught latch_try_ignores_lock "the latched stress test's shadow checker" test --test stress random_requests_through_the_latches
expect_caught latch_lost_handover    "the latch's contention test" test --lib latch::
expect_caught no_wake   "loom: a release wakes a parked waiter" loom guard_release_wakes_parked_waiter
expect_caught bias_no_revoke "loom: a biased reader and a writer" loom biased_reader_and_writer_exclude_and_finish
also          bias_no_revoke "the stress test's shadow checker" test --test stress
expect_caught bias_no_fence "loom: a biased reader and a writer" loom biased_reader_and_writer_exclude_and_finish
expect_caught bias_no_abort "loom: a biased reader and a writer" loom biased_reader_and_writer_exclude_and_finish
expect_caught bias_free_pinned "loom: a biased reader and a writer" loom biased_reader_and_writer_exclude_and_finish
expect_caught bias_visit_relaxed "loom: a biased reader and a writer" loom biased_reader_and_writer_exclude_and_finish
expect_caught direct_unclaimed "the proptest oracle"             test --test oracle
also          direct_unclaimed "loom: direct grants and a batch"  loom direct_grants_and_a_batch_exclude_and_finish
expect_caught direct_dropped "the direct-grant tests"             test --test direct
also          direct_dropped "loom: a direct release races a claim" loom a_direct_release_races_a_claim
expect_caught direct_blind "loom: direct grants and a batch"      loom direct_grants_and_a_batch_exclude_and_finish
expect_caught direct_release_relaxed "loom: direct grants and a batch" loom direct_grants_and_a_batch_exclude_and_finish
expect_caught direct_no_abort "loom: a direct batch and a claimer" loom a_direct_batch_and_a_claimer_exclude
also          no_wake   "the proptest oracle"                   test --test oracle
also          no_wake   "the stress test"                       test --test stress
expect_caught grant_all "the lifecycle model (real table)"      model --test lifecycle the_real_engine
also          skip_keep_record    "the crash test"              crashtest --kills 40
expect_caught skip_keep_record    "the recovery tests"          journal --test recovery
expect_caught skip_release_record "the crash test"              crashtest --kills 40
also          skip_release_record "the recovery tests"          journal --test recovery
also          skip_release_record "the lifecycle model"         model --test lifecycle the_real_engine
also          no_epoch_floor      "the crash test"              crashtest --kills 40
expect_caught no_epoch_floor      "the lifecycle model"         model --test lifecycle the_real_engine
expect_caught no_sync             "the power-cut test"          journal --test recovery acknowledged_tickets_survive
expect_caught no_intention "the path proptest oracle"           test --test path path_locks_agree_with_the_pairwise_oracle
expect_caught no_intention "loom: subtree lock vs descendant"   loom_path subtree_lock_races_descendant_lock
expect_caught no_intention "the stateright path model"          model --test path path_locks_hold_their_properties_on_a_small_tree
expect_caught sql_grant_all     "the multi-process counter (lost updates)"   sql --test multiprocess processes_
also          sql_grant_all     "the conformance suite"                      sql --test conformance exclusive_excludes
also          sql_grant_all     "the shared/exclusive race"                  sql --test stress
expect_caught sql_repeatable_read "the shared/exclusive race (MariaDB)"      sql --test stress shared_and_exclusive_race_mariadb
expect_caught sql_no_notify     "the NOTIFY wake-up test"                    sql --test waiting notify_wakes
also          sql_no_token_bump "the multi-process token-checking resource"  sql --test multiprocess processes_
expect_caught sql_no_token_bump "the conformance fencing test"               sql --test conformance fencing_tokens
also          sql_no_expiry     "the SIGKILL test (stale lock)"              sql --test multiprocess sigkill_
expect_caught sql_no_expiry     "the lapsed-lease test"                      sql --test faults lapsed_lease

if [ "$survivors" -ne 0 ]; then
  echo "$survivors mutant run(s) survived: a checker cannot see the bug it exists for"
  exit 1
fi
echo "every mutant was caught"
