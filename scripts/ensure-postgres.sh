#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, pg_ctl) exist for the test suite;
# installs Debian's `postgresql` package when they are missing and we may.
set -eu
found() {
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
found && exit 0
echo "PostgreSQL server binaries not found: installing Debian's postgresql package"
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "initdb not found and not root: install PostgreSQL (apt-get install postgresql)" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq postgresql >/dev/null
found || { echo "postgresql installed but initdb still not found" >&2; exit 1; }
