#!/usr/bin/env bash
# The lifecycle model check (lockcore check) on its default configuration, then every model
# mutant, each of which must fail the property it names. Usage: ci/check.sh [check options]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p lockcore-cli
bin=target/release/lockcore
"$bin" check "$@"
failures=0
while IFS= read -r line; do
  mutant=${line%% *}
  property=$(sed -n 's/.*(must fail: \(.*\))$/\1/p' <<<"$line")
  out=$("$bin" check --mutant "$mutant" "$@" 2>&1) && status=0 || status=$?
  last=$(grep '^verdict=' <<<"$out" | tail -1)
  if [ "$status" -ne 0 ] && grep -q "property=\"$property\"" <<<"$last"; then
    echo "caught:   model mutant $mutant by \"$property\": $last"
  else
    echo "SURVIVED: model mutant $mutant (expected \"$property\" to fail): $last"
    failures=$((failures + 1))
  fi
done < <("$bin" check --list-mutants)
if [ "$failures" -ne 0 ]; then
  echo "$failures model mutant(s) survived"
  exit 1
fi
echo "every model mutant was caught"
