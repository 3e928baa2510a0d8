#!/usr/bin/env bash
# Smoke test of the zero-setup default: no JOBSYS_DATABASE_URL, so jobsys starts the
# embedded PostgreSQL under JOBSYS_HOME, migrates, and answers; then stops it.
set -euo pipefail
J=.venv/bin/jobsys
: "${JOBSYS_HOME:?set JOBSYS_HOME to a scratch folder}"
$J db start
$J db upgrade
$J db check
# The shipped schedule fans out over the demo's table: on a fresh database those
# entries wait for it (warnings, exit 0); once seeded they check clean.
$J config check
$J demo seed --accounts 50
$J config check
$J systemd render --json | grep -q '"jobsys-worker@.service"'
$J schedule list --json | grep -q '"name": "retention"'
$J db status --json | grep -q '"up_to_date": true'
$J failures list --json | grep -q '"items": \[\]'
$J issues list --json | grep -q '"items": \[\]'
if $J --help >/dev/null && [ -n "$($J db url)" ]; then echo "embedded smoke: ok"; fi
$J db stop
if $J db status >/dev/null 2>&1; then echo "server still answering after stop" >&2; exit 1; fi
echo "embedded smoke: stopped cleanly"

# A job through the embedded server: defer, run with a draining worker, check it succeeded.
$J db start
JOB_ID=$($J defer demo.purge_expired_post_media --args '{}')
$J worker --drain --lane base --log-format json 2>/dev/null
STATUS=$(.venv/bin/python - "$JOB_ID" <<'PY'
import subprocess, sys, psycopg
url = subprocess.run([".venv/bin/jobsys", "db", "url"], capture_output=True, text=True, check=True).stdout.strip()
with psycopg.connect(url) as conn:
    print(conn.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (int(sys.argv[1]),)).fetchone()[0])
PY
)
if [ "$STATUS" != "succeeded" ]; then echo "job $JOB_ID ended '$STATUS', expected succeeded" >&2; exit 1; fi
echo "embedded smoke: job $JOB_ID succeeded through jobsys worker --drain"
$J db stop
