#!/usr/bin/env bash
# What the iam tests' private, token-checking MariaDB needs (tests/iamfixture.py):
# the PAM auth plugin (mariadb-server), pam_exec (libpam-modules) and the
# system python3 that runs the token verifier. Installs from Debian's packages
# whatever is missing; changes nothing else on the system.
set -euo pipefail
missing=()
[ -e /usr/lib/mysql/plugin/auth_pam_v1.so ] || missing+=(mariadb-server)
compgen -G "/lib/*/security/pam_exec.so" >/dev/null || compgen -G "/usr/lib/*/security/pam_exec.so" >/dev/null \
  || missing+=(libpam-modules)
[ -x /usr/bin/python3 ] || missing+=(python3-minimal)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} from Debian's packages (for the iam tests)" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
