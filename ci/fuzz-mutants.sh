#!/usr/bin/env bash
# Shows that the fuzz targets find injected bugs within a smoke run: builds the real code with a
# deliberately broken variant (LOCKCORE_MUTANT, see core/build.rs, shared by lockcore-journal and lockcore-sql) and
# requires the target to crash. Usage: ci/fuzz-mutants.sh [SECONDS per run, default 30]
#
#   table_ops  + partial              a refused try_acquire keeps the keys that were free
#   table_ops  + barging              new requests ignore queued waiters
#   lifecycle  + skip_release_record  an end-action releases without journaling it
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
survivors=0
for pair in table_ops:partial table_ops:barging lifecycle:skip_release_record; do
  target=${pair%%:*}
  mutant=${pair##*:}
  log=$(mktemp)
  LOCKCORE_MUTANT=$mutant ci/fuzz.sh "$target" "$secs" >"$log" 2>&1 || true
  last=$(tail -1 "$log")
  if grep -qE "^target=$target execs=[0-9]+ crashes=[1-9]" <<<"$last"; then
    echo "caught:   $mutant by fuzz target $target: $(grep -m1 -E 'panicked at|ERROR: libFuzzer' "$log" | cut -c1-120)"
  else
    echo "SURVIVED: $mutant was not found by fuzz target $target in $secs s ($last)"
    tail -20 "$log"
    survivors=$((survivors + 1))
  fi
  rm -f "$log"
  # Drop the mutant's crashing inputs: they are expected, and would otherwise pile up.
  rm -rf "fuzz/artifacts/$target/mutant-$mutant"
done
[ "$survivors" -eq 0 ] && echo "every fuzz mutant was caught"
