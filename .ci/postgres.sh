# Sourced by .ci/run: install Debian's PostgreSQL if needed, start a throwaway server on
# loopback, and export AUTOTL_TEST_POSTGRES_URL for the multi-machine test.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_data=$(mktemp -d /tmp/autotl-pg.XXXXXX)
pg_port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
chown postgres "$pg_data"
su postgres -c "$pg_bin/initdb -D $pg_data -A trust -U postgres" >/dev/null
su postgres -c "$pg_bin/pg_ctl -D $pg_data -o '-h 127.0.0.1 -p $pg_port -k /tmp' -l $pg_data/server.log -w start" >/dev/null
su postgres -c "$pg_bin/createdb -h 127.0.0.1 -p $pg_port autotl"
export AUTOTL_TEST_POSTGRES_URL="postgresql+psycopg2://postgres@127.0.0.1:$pg_port/autotl"
trap 'su postgres -c "$pg_bin/pg_ctl -D $pg_data -m fast stop" >/dev/null 2>&1 || true; rm -rf "$pg_data"' EXIT
