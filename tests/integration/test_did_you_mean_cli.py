"""Suggestions and notes where an operator's name matches nothing (newuser L8)."""

from __future__ import annotations

import json


def test_defer_suggests_only_the_close_task(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "defer", "demo.nosuch", "--args", "{}")
    assert result.exit_code == 2
    assert "Did you mean" not in result.stderr
    assert "Is its module listed in --app" in result.stderr
    result = cli("--database-url", db_url, "defer", "demo.download_story", "--args", "{}")
    assert result.exit_code == 2
    assert "Did you mean 'demo.story.download'?" in result.stderr


def test_unknown_lane_lists_the_lanes(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "jobs", "list", "--lane", "nosuch")
    assert result.exit_code == 2
    assert "error: unknown lane 'nosuch'; configured: base, ai, " in result.stderr


def test_jobs_list_notes_an_unregistered_task(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "jobs", "list", "--task", "demo.refresh_profil")
    assert result.exit_code == 0
    assert (
        "note: no task 'demo.refresh_profil' is registered (did you mean 'demo.refresh_profile'?)"
        in result.stderr
    )
    assert "no jobs match" in result.stderr + result.stdout
    result = cli("--database-url", db_url, "jobs", "list", "--task", "demo.nosuch", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "items": [],
        "count": 0,
        "total": 0,
        "notes": ["no task 'demo.nosuch' is registered"],
    }
    known = cli("--database-url", db_url, "jobs", "list", "--task", "demo.refresh_profile")
    assert known.exit_code == 0 and "note:" not in known.stderr


def test_failures_list_notes_an_unregistered_task(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "failures", "list", "--task", "demo.nosuch")
    assert result.exit_code == 0
    assert "note: no task 'demo.nosuch' is registered" in result.stderr
    result = cli("--database-url", db_url, "failures", "list", "--task", "demo.nosuch", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["notes"] == ["no task 'demo.nosuch' is registered"]
    known = cli("--database-url", db_url, "failures", "list", "--task", "demo.refresh_profile")
    assert known.exit_code == 0 and "note:" not in known.stderr
