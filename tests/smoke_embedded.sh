#!/usr/bin/env bash
# Smoke test of the zero-setup default: no JOBSYS_DATABASE_URL, so jobsys starts the
# embedded PostgreSQL under JOBSYS_HOME, migrates, and answers; then stops it.
set -euo pipefail
J=.venv/bin/jobsys
: "${JOBSYS_HOME:?set JOBSYS_HOME to a scratch folder}"
$J db start
$J db upgrade
$J db check
$J config check
$J db status --json | grep -q '"up_to_date": true'
$J failures list --json | grep -q '"failures": \[\]'
$J issues list --json | grep -q '"issues": \[\]'
if $J --help >/dev/null && [ -n "$($J db url)" ]; then echo "embedded smoke: ok"; fi
$J db stop
if $J db status >/dev/null 2>&1; then echo "server still answering after stop" >&2; exit 1; fi
echo "embedded smoke: stopped cleanly"
