"""Human output writes filters as the operator types them and times in the README's
form (``2026-12-05 19:13:00 UTC (3m ago)``), never a Python tuple or a raw ISO time
with microseconds; ``--json`` keeps ISO-8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from jobsys.cli._tui import detail_lines

HUMAN = r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in (59m|1h|29m|30m)\)"


def test_bulk_filters_read_as_options(cli: Any, db_url: str) -> None:
    defer = ("--database-url", db_url, "defer", "demo.refresh_profile")
    assert cli(*defer, "--args", '{"account_id": 8812}').exit_code == 0
    cancel = ("--database-url", db_url, "jobs", "cancel", "--all", "--dry-run")
    result = cli(*cancel, "--arg", "account_id=8812", "--queue", "profiles", "--status", "todo")
    said = result.stdout + result.stderr
    assert result.exit_code == 0, said
    expected = "(filters: --queue profiles --status todo --arg account_id=8812)"
    assert f"1 jobs to cancel {expected}" in said
    quoted = cli(*cancel, "--arg-contains", "two words", "--everything")
    assert "(filters: --arg-contains 'two words' --everything)" in quoted.stdout + quoted.stderr
    document = cli(*cancel, "--arg", "account_id=8812", "--json").json()
    assert document["filters"] == {"args": ["account_id=8812"]}  # --json as before


def test_times_in_messages_and_show_rows_are_human(cli: Any, db_url: str) -> None:
    defer = ("--database-url", db_url, "defer", "demo.refresh_profile", "--in", "1h")
    deferred = cli(*defer, "--args", '{"account_id": 2}')
    assert re.search(f"due {HUMAN}$", deferred.stderr.strip()), deferred.stderr
    later = int(deferred.stdout)

    shown = cli("--database-url", db_url, "jobs", "show", str(later)).stdout
    assert re.search(f"waiting because +scheduled for {HUMAN}$", shown, re.M), shown
    as_json = cli("--database-url", db_url, "jobs", "show", str(later), "--json").json()
    assert re.fullmatch(  # --json keeps the ISO-8601 time
        r"scheduled for 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", as_json["waiting_because"]
    )

    paused = cli("--database-url", db_url, "queues", "pause", "sync", "--for", "30m", "--yes")
    assert paused.exit_code == 0, paused.stderr
    assert re.search(f"paused sync until {HUMAN}$", paused.stderr.strip()), paused.stderr


def test_dashboard_details_write_every_time_as_their_times_at_are() -> None:
    """``first_seen`` (no ``_at``) as ``created_at``: to the second, no microseconds."""
    seen = datetime.now(UTC) - timedelta(minutes=3)
    lines = detail_lines({"first_seen": seen, "created_at": seen}, 80)
    assert lines[0] == "first seen: " + lines[1].removeprefix("created at: ")
    assert re.fullmatch(r"first seen: 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0])
