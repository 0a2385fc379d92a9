#!/usr/bin/env bash
# The database backend (lockcore-sql) against real PostgreSQL and MariaDB: checks that both
# answer (starting them if they are installed but stopped; failing with a clear message if
# not), then runs its tests (conformance, multi-process, faults, bad input) and the quick
# benchmark. Usage: ci/sql.sh [--check | --no-bench]
#   --check     only make sure both databases answer (ci/test.sh does this before its tests,
#               which include lockcore-sql's, and runs the quick benchmark later)
#
# URLs: LOCKCORE_PG_URL (default postgres://postgres@127.0.0.1:5432/test) and
# LOCKCORE_MYSQL_URL (default mysql://root@127.0.0.1:3306/test).
set -euo pipefail
cd "$(dirname "$0")/.."

answers() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_for() { # name port
  for _ in $(seq 1 60); do
    answers 127.0.0.1 "$2" && return 0
    sleep 0.5
  done
  return 1
}

ensure_postgres() {
  answers 127.0.0.1 5432 && return 0
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is installed but not answering on 127.0.0.1:5432: starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    wait_for postgres 5432 && return 0
  fi
  echo "ERROR: PostgreSQL does not answer on 127.0.0.1:5432 and could not be started." >&2
  echo "       lockcore-sql's tests need it (trust auth, database 'test'); see docs/sql.md." >&2
  exit 1
}

ensure_mariadb() {
  answers 127.0.0.1 3306 && return 0
  if [ -x /usr/sbin/mariadbd ]; then
    echo "MariaDB is installed but not answering on 127.0.0.1:3306: starting it"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    wait_for mariadb 3306 && return 0
  fi
  echo "ERROR: MariaDB does not answer on 127.0.0.1:3306 and could not be started." >&2
  echo "       lockcore-sql's tests need it (root, empty password, database 'test'); see docs/sql.md." >&2
  exit 1
}

ensure_postgres
ensure_mariadb
# The port answering is not enough: the database and the account must work too.
if command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -d test -Atc "select 1" >/dev/null 2>&1 \
    || psql -h 127.0.0.1 -U root -d test -Atc "select 1" >/dev/null \
    || { echo "ERROR: PostgreSQL answers but database 'test' is not reachable as postgres or root" >&2; exit 1; }
fi
if command -v mysql >/dev/null; then
  mysql -h 127.0.0.1 -uroot test -e "select 1" >/dev/null \
    || { echo "ERROR: MariaDB answers but database 'test' is not reachable as root with an empty password" >&2; exit 1; }
fi
echo "PostgreSQL and MariaDB answer"
[ "${1:-}" = "--check" ] && exit 0

cargo test -p lockcore-sql
if [ "${1:-}" != "--no-bench" ]; then
  cargo run --quiet -p lockcore-sql --bin lockcore-sql-bench -- --quick
fi
