#!/usr/bin/env bash
# Start a PostgreSQL server on loopback for the store tests and print its URL.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^${version} main"; then
  pg_createcluster "${version}" main >&2
fi
pg_ctlcluster "${version}" main start >&2 || true
for _ in $(seq 1 30); do
  runuser -u postgres -- pg_isready -q -h 127.0.0.1 && break
  sleep 1
done
runuser -u postgres -- psql -q -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hostcore') THEN
    CREATE ROLE hostcore LOGIN PASSWORD 'hostcore-ci';
  END IF; END \$\$;" >&2
runuser -u postgres -- psql -q -tc "SELECT 1 FROM pg_database WHERE datname = 'hostcore_test'" \
  | grep -q 1 || runuser -u postgres -- createdb -O hostcore hostcore_test >&2
echo "postgresql+asyncpg://hostcore:hostcore-ci@127.0.0.1:5432/hostcore_test"
