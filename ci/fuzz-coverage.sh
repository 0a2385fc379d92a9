#!/usr/bin/env bash
# Line coverage of the real code reached by a fuzz target's corpus (cargo fuzz coverage + llvm-cov).
# Usage: ci/fuzz-coverage.sh TARGET   (needs the nightly llvm-tools-preview component; installs it)
# Prints one line per crate: `coverage target=T crate=C lines=covered/total (P%)`.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: ci/fuzz-coverage.sh TARGET}
rustup +nightly component add llvm-tools-preview >/dev/null 2>&1 || true
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
llvm_cov="$(rustc +nightly --print sysroot)/lib/rustlib/$triple/bin/llvm-cov"
cargo +nightly fuzz coverage "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || { echo "cargo fuzz coverage $t failed" >&2; exit 1; }
# cargo-fuzz puts the coverage build under fuzz/target or the root target/, by version.
bin=$(ls -t "fuzz/target/$triple/coverage/$triple/release/$t" "target/$triple/coverage/$triple/release/$t" 2>/dev/null | head -1 || true)
prof="fuzz/coverage/$t/coverage.profdata"
# The crates each target links (llvm-cov reports nonsense for files a binary does not contain).
case $t in
  journal_decode) crates="core journal" ;;
  lifecycle) crates="core journal model" ;;
  *) crates="core" ;;
esac
for crate in $crates; do
  mapfile -t files < <(find "$crate/src" -name '*.rs' | sort)
  total=$("$llvm_cov" report "$bin" -instr-profile="$prof" "${files[@]}" 2>/dev/null | awk '/^TOTAL/ {print $8, $9, $10}')
  # TOTAL columns: regions missed cover functions missed executed lines missed cover ...
  read -r lines missed pct <<<"$total"
  [ -n "${lines:-}" ] || continue
  [ "$lines" -gt 0 ] || continue
  echo "coverage target=$t crate=$crate lines=$((lines - missed))/$lines ($pct)"
done
