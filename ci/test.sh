#!/usr/bin/env bash
# Every test lockcore has, as CI runs it (.ci/run calls this). Usage: ci/test.sh
# Each step is also a script or a cargo command you can run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "format";        cargo fmt --all -- --check
step "sync shim";     ci/check-sync-shim.sh
step "clippy";        cargo clippy --workspace --all-targets -- -D warnings
step "databases";     ci/sql.sh --check   # lockcore-sql's tests need PostgreSQL and MariaDB
step "tests";         cargo test --workspace
step "rustdoc";       RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
step "loom";          ci/loom.sh
step "mutants";       ci/mutants.sh
step "model check";   ci/check.sh
step "demo";          cargo run --release --quiet -p lockcore-cli -- demo --seconds 2
step "bench quick";   cargo run --release --quiet -p lockcore-cli -- bench --quick
step "sql bench";     cargo run --quiet -p lockcore-sql --bin lockcore-sql-bench -- --quick  # debug: the database dominates, and the tests built it
step "crash test";    cargo run --release --quiet -p lockcore-cli -- crashtest --kills 200
step "footprint";     cargo run --release --quiet -p lockcore-cli -- footprint --keys 10000000
step "miri";          ci/miri.sh
step "fuzz smoke";    ci/fuzz.sh all 15
step "fuzz mutants";  ci/fuzz-mutants.sh 20
step "all green"
