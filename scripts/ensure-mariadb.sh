#!/usr/bin/env bash
# Make sure a MariaDB answers on 127.0.0.1:3306 as root with no password:
# install it from Debian's packages and start it where it is missing or stopped.
set -euo pipefail
host=${GATEWAY_TEST_DB_HOST:-127.0.0.1}
port=${GATEWAY_TEST_DB_PORT:-3306}

ping_db() { mariadb-admin --host="$host" --port="$port" --user=root --connect-timeout=2 ping >/dev/null 2>&1; }

if ping_db; then exit 0; fi
if [ "$host" != "127.0.0.1" ] && [ "$host" != "localhost" ]; then
  echo "MariaDB at $host:$port does not answer, and it is not local: start it yourself" >&2
  exit 1
fi
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "installing mariadb-server from Debian's packages" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server mariadb-client >/dev/null
fi
echo "starting MariaDB" >&2
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
for _ in $(seq 1 60); do
  if ping_db; then exit 0; fi
  sleep 0.5
done
echo "MariaDB did not come up on $host:$port within 30 s" >&2
exit 1
