#!/usr/bin/env bash
# Fuzzes lockcore with cargo-fuzz (libFuzzer, nightly, AddressSanitizer) for a fixed time.
#
# Usage: ci/fuzz.sh TARGET|all SECONDS
#        ci/fuzz.sh minimize TARGET        (shrink fuzz/corpus/TARGET to the inputs that add coverage)
#        ci/fuzz.sh minimize TARGET FILE   (shrink one crashing input; the result is printed)
#
#   table_ops      one thread, every result compared with a sequential oracle
#   table_threads  2-3 threads, shadow invariant checker, no barging, no lost wake-ups
#   journal_decode arbitrary bytes as a journal, and real journals truncated or bit-flipped
#   lifecycle      arbitrary command lifecycles with crashes on the real table and journal,
#                  checked against the lifecycle model's properties after every step
#
# The corpus lives in fuzz/corpus/TARGET (not in git); the seeds committed in
# fuzz/seeds/TARGET (one small input per deliberately broken core, each caught within a few
# executions, and inputs that once crashed a target) are copied into it first. Crashing inputs are written to fuzz/artifacts/TARGET;
# reproduce one with
#   cargo +nightly fuzz run --release --debug-assertions TARGET fuzz/artifacts/TARGET/crash-...
# and read it with `cargo +nightly fuzz fmt --release --debug-assertions TARGET FILE`.
# LOCKCORE_MUTANT=NAME (core/build.rs) fuzzes a deliberately broken core, with its crashing
# inputs in fuzz/artifacts/TARGET/mutant-NAME; the next plain run rebuilds the real core.
# Extra libFuzzer flags: FUZZ_ARGS="-seed=1 ...".
#
# The very last line is `target=T execs=N crashes=C` (for `all`: one line per target, then
# `target=all ...` with the totals); the exit status is non-zero if anything crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

usage() {
  echo "usage: ci/fuzz.sh TARGET|all SECONDS | ci/fuzz.sh minimize TARGET [CRASH-FILE]" >&2
  exit 2
}
if [ "${1:-}" = minimize ]; then
  [ $# -ge 2 ] || usage
  if [ $# -eq 3 ]; then
    exec cargo +nightly fuzz tmin --release --debug-assertions "$2" "$3"
  fi
  exec cargo +nightly fuzz cmin --release --debug-assertions "$2" "fuzz/corpus/$2"
fi
[ $# -eq 2 ] || usage
what=$1
secs=$2
[[ $secs =~ ^[1-9][0-9]*$ ]] || usage

# cargo-fuzz needs a nightly toolchain (-Zsanitizer, libFuzzer's coverage instrumentation).
have_nightly() {
  if command -v rustup >/dev/null 2>&1; then
    rustup toolchain list 2>/dev/null | grep -q '^nightly'
  else
    cargo +nightly --version >/dev/null 2>&1
  fi
}
if ! have_nightly; then
  echo "ci/fuzz.sh: no nightly Rust toolchain is installed, and cargo-fuzz needs one." >&2
  echo "ci/fuzz.sh: install it with \`rustup toolchain install nightly\`, then run this again." >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "ci/fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
# A build attempted with the stable toolchain first leaves a rustc cache that confuses the
# nightly one (docs: TOOLING.md).
if [ -f fuzz/target/.rustc_info.json ] && ! grep -q nightly fuzz/target/.rustc_info.json; then
  rm -f fuzz/target/.rustc_info.json
fi

# Release build with debug assertions (the core has debug_assert!s); ASan is cargo-fuzz's default.
build_flags=(--release --debug-assertions)
# -timeout: an input that runs this long is a hang (a self-deadlock, a lost wake-up without
# a deadline); every input normally takes well under 100 ms.
libfuzzer_flags() {
  local flags=(-max_total_time="$secs" -print_final_stats=1 -timeout=10)
  # shellcheck disable=SC2206 # word splitting intended
  flags+=(${FUZZ_ARGS:-})
  printf '%s\n' "${flags[@]}"
}

mapfile -t all_targets < <(cargo +nightly fuzz list)
if [ "$what" = all ]; then
  targets=("${all_targets[@]}")
else
  if ! printf '%s\n' "${all_targets[@]}" | grep -qx -- "$what"; then
    echo "ci/fuzz.sh: no fuzz target '$what'; targets: all ${all_targets[*]}" >&2
    exit 2
  fi
  targets=("$what")
fi
if [ -n "${LOCKCORE_MUTANT:-}" ]; then
  echo "ci/fuzz.sh: LOCKCORE_MUTANT=$LOCKCORE_MUTANT: fuzzing a deliberately broken core"
fi

results=()
total_execs=0
total_crashes=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for $secs s"
  cargo +nightly fuzz build "${build_flags[@]}" "$t"

  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t${LOCKCORE_MUTANT:+/mutant-$LOCKCORE_MUTANT}
  mkdir -p "$corpus" "$artifacts"
  if [ -d "fuzz/seeds/$t" ]; then
    for f in "fuzz/seeds/$t"/*; do
      [ -f "$f" ] || continue
      [ -e "$corpus/$(basename "$f")" ] || cp "$f" "$corpus/"
    done
  fi

  log=$(mktemp)
  stamp=$(mktemp)
  mapfile -t flags < <(libfuzzer_flags)
  start=$SECONDS
  set +e
  cargo +nightly fuzz run "${build_flags[@]}" "$t" "$corpus" -- \
    -artifact_prefix="$PWD/$artifacts/" "${flags[@]}" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  elapsed=$((SECONDS - start))

  # libFuzzer prints its final stats (-print_final_stats=1) on a clean exit and on a crash;
  # if they are missing, fall back to the last status line (#N ...).
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    execs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
  fi
  execs=${execs:-0}
  rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -1)
  if [ -z "$rate" ] || [ "$rate" -eq 0 ]; then
    rate=$((execs / (elapsed > 0 ? elapsed : 1)))
  fi
  mapfile -t new_inputs < <(find "$artifacts" -maxdepth 1 -type f -newer "$stamp" \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \))
  crashes=${#new_inputs[@]}
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1 # died without writing an input (a crash in startup, say)
  fi
  rm -f "$log" "$stamp"

  echo "ci/fuzz.sh: $t: $execs execs in ${elapsed} s ($rate execs/s), $crashes crash(es)"
  for f in "${new_inputs[@]}"; do
    echo "ci/fuzz.sh: $t: crashing input $f"
  done
  results+=("target=$t execs=$execs crashes=$crashes")
  total_execs=$((total_execs + execs))
  total_crashes=$((total_crashes + crashes))
  if [ "$what" = all ]; then
    echo "target=$t execs=$execs crashes=$crashes"
  fi
done

if [ "$what" = all ]; then
  echo "== summary"
  printf '%s\n' "${results[@]}"
  echo "target=all execs=$total_execs crashes=$total_crashes"
else
  echo "${results[0]}"
fi
[ "$total_crashes" -eq 0 ]
