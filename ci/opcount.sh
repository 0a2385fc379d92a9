#!/usr/bin/env bash
# Instructions per warm, uncontended acquire+release on one thread, counted by callgrind
# (repeatable whatever the machine's load). Each cell runs lockcore-opcount twice, with N and 2N
# operations, and reports (I(2N) - I(N)) / N, so setup cancels out.
# Usage: ci/opcount.sh [N]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
cargo build --release --quiet -p lockcore-benches --bin lockcore-opcount
bin=target/release/lockcore-opcount
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 >/dev/null |
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
for how in try acquire global uniform; do
  for keys in 1 8; do
    a=$(count "$how" "$keys" "$n")
    b=$(count "$how" "$keys" $((2 * n)))
    echo "$how keys=$keys instructions/op=$(( (b - a) / n ))"
  done
done
