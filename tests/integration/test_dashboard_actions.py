"""The dashboard's keys act on the database: mute and reopen an issue, pause and
resume a schedule entry and a lane, cancel a job, filter a pane. Driven in-process
with Textual's pilot (no terminal: the same whatever ``TERM`` the suite runs under);
each action asks first and the test answers ``y``, then reads the database.
``test_dashboard_keys`` drives retry and resolve through a real pty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _retry_support import bulk_failed_jobs, make_issue, sql
from textual.pilot import Pilot
from textual.widgets import DataTable
from waiting import wait_until_async

from jobsys.cli import _tui
from jobsys.lanes.execution import build_engine_app
from jobsys.settings import Settings


async def until(check: Callable[[], Any], what: str, timeout: float = 15) -> None:
    await wait_until_async(check, timeout, what, interval=0.02)


def rows(app: _tui.DashboardApp, pane: str) -> list[list[str]]:
    table = app.query_one(f"#table-{pane}", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def select(pilot: Pilot[None], app: _tui.DashboardApp, pane: str, key: str) -> None:
    """Open ``pane`` (its number key) and move the cursor to the row ``key``."""
    await pilot.press(str([p.id for p in app.panes].index(pane) + 1))
    await until(lambda: app.row(pane, key) is not None, f"{pane} row {key}")
    table = app.query_one(f"#table-{pane}", DataTable)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()
    assert app.current() == (pane, key)


async def act(pilot: Pilot[None], app: _tui.DashboardApp, key: str, question: str) -> None:
    """Press an action's key, check what it asks, confirm with ``y``."""
    await pilot.press(key)
    await until(lambda: isinstance(app.screen, _tui.ConfirmScreen), f"the question of {key!r}")
    assert question in app.screen.text, app.screen.text  # type: ignore[attr-defined]
    await pilot.press("y")


def status_of(url: str, issue: int) -> dict[str, Any]:
    [row] = sql(url, "SELECT status, muted_until FROM jobsys_issues WHERE id = %s", (issue,))
    return row


async def test_mute_reopen_pause_resume_cancel_and_filter_with_keys(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tui, "POLL_SECONDS", 0.5)
    issue = make_issue(db_url)
    engine = build_engine_app(db_url)
    async with engine.open_async():
        job = await engine.configure_task("tests.keys.work", queue="default").defer_async(n=1)
    app = _tui.DashboardApp(settings)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(lambda: app.reloads >= 1, "the first read")

        # an issue: mute it (it leaves the pane), show every issue, reopen it
        await select(pilot, app, "issues", str(issue))
        await act(pilot, app, "m", f"mute (2h) issue {issue}: test issue?")
        await until(lambda: status_of(db_url, issue)["status"] == "muted", "the mute")
        assert status_of(db_url, issue)["muted_until"] is not None
        await until(lambda: app.row("issues", str(issue)) is None, "the muted issue leaving")
        await pilot.press("a")  # every issue, the muted one too
        await select(pilot, app, "issues", str(issue))
        await act(pilot, app, "o", f"reopen issue {issue}")
        await until(lambda: status_of(db_url, issue)["status"] == "open", "the reopen")

        # a schedule entry: pause, then resume
        entry = str(app.data["schedule"][0]["name"])
        paused = "SELECT paused FROM jobsys_schedule_entries WHERE name = %s"
        await select(pilot, app, "schedule", entry)
        await act(pilot, app, "p", f"pause schedule entry {entry}?")
        await until(lambda: sql(db_url, paused, (entry,)) == [{"paused": True}], "the pause")
        await until(lambda: (app.row("schedule", entry) or {}).get("paused"), "paused shown")
        # the words of `schedule pause` (not 'ENTRY: paused' whatever the result)
        assert app.note == f"{entry} paused; ticks are not enqueued until it is resumed"
        await act(pilot, app, "p", f"resume schedule entry {entry}?")
        await until(lambda: sql(db_url, paused, (entry,)) == [{"paused": False}], "the resume")
        await until(lambda: app.note == f"{entry} resumed", "the resume's note")

        # the base lane: pause its queues for every worker, then resume them
        pauses = "SELECT queue, target FROM jobsys_queue_pauses ORDER BY queue"
        await select(pilot, app, "lanes", "base")
        queues = app.data["lanes"][[r["lane"] for r in app.data["lanes"]].index("base")]
        await act(pilot, app, "p", f"pause base ({queues['queues']})?")
        want = [{"queue": q, "target": "base"} for q in sorted(queues["queues"].split(", "))]
        await until(lambda: sql(db_url, pauses) == want, "the lane's pause")
        await until(lambda: (app.row("lanes", "base") or {}).get("paused"), "paused shown")
        await act(pilot, app, "p", "resume base")
        await until(lambda: sql(db_url, pauses) == [], "the lane's resume")

        # a waiting job: cancel it
        await select(pilot, app, "jobs", str(job))
        await act(pilot, app, "c", f"cancel job {job}?")
        status = "SELECT status FROM procrastinate_jobs WHERE id = %s"
        await until(lambda: sql(db_url, status, (job,)) == [{"status": "cancelled"}], "cancel")
        await until(lambda: app.row("jobs", str(job)) is None, "the cancelled job leaving")
        assert rows(app, "jobs")[0][0].startswith("idle: no job is waiting or running")
        assert app.current() == ("jobs", None)  # the explanation selects nothing

        # `/` filters the pane; a filter that matches nothing says so; escape clears it
        await pilot.press("2", "3", "slash", *"zzz-none", "enter")
        await until(lambda: app.filter_text == "zzz-none", "the filter")
        assert rows(app, "issues")[0][0].startswith("nothing matches the filter 'zzz-none'")
        await pilot.press("slash", *"test iss", "enter")
        await until(lambda: app.filter_text == "test iss", "the second filter")
        assert [r[0] for r in rows(app, "issues")] == [str(issue)]
        await pilot.press("escape", "escape")
        await until(lambda: app.filter_text == "", "the filter cleared")


def summary(app: _tui.DashboardApp) -> list[str]:
    from textual.widgets import Static

    return str(app.query_one("#summary", Static).content).splitlines()


async def test_a_pause_and_a_mute_read_right_at_80x24(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns the lanes pane has no room for its paused column: the header
    counts the paused queues and the line under it says who paused which, why and for
    how long. A mute's note said "mute (2h)d"."""
    from jobsys.cli._context import config_of
    from jobsys.flow.service import set_paused

    monkeypatch.setattr(_tui, "POLL_SECONDS", 0.5)
    issue = make_issue(db_url)
    long_title = "AuthenticationError: Instagram asks account <n> to log in again, every one"
    sql(db_url, "UPDATE jobsys_issues SET title = %s WHERE id = %s", (long_title, issue))
    await set_paused(
        settings, config_of(settings), "story_downloads", paused=True, for_="30m",
        reason="upstream 429",
    )  # fmt: skip
    app = _tui.DashboardApp(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.reloads >= 1, "the first read")
        head, second = summary(app)
        assert len(head) <= 80 and head.endswith("paused 1"), head
        assert second.startswith("story_downloads: paused ") and "upstream 429" in second
        assert "(resumes in 2" in second and len(second) <= 80, second
        await select(pilot, app, "issues", str(issue))
        await act(pilot, app, "m", f"mute (2h) issue {issue}: AuthenticationError")
        await until(lambda: status_of(db_url, issue)["status"] == "muted", "the mute")
        await until(lambda: summary(app)[1] == f"issue {issue} muted for 2h", "the note")
        # every issue (`a`): the status tells the muted one apart, at 80 columns too
        await pilot.press("a")
        await until(lambda: app.row("issues", str(issue)) is not None, "the muted issue")
        await until(lambda: any("muted" in r for r in rows(app, "issues")), "its status")


def columns(app: _tui.DashboardApp, pane: str) -> list[str]:
    table = app.query_one(f"#table-{pane}", DataTable)
    return [str(c.label) for c in table.columns.values()]


async def test_the_issues_pane_shows_the_accounts_at_80x24(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issues are ordered by the accounts they hurt, yet at 80 columns the pane dropped
    that column (a long title kept its 48 characters): the title is now cut instead,
    open issues and every issue (`a`, with their status) alike."""
    monkeypatch.setattr(_tui, "POLL_SECONDS", 0.5)
    issue = make_issue(db_url)
    long_title = "AuthenticationError: Instagram asks account <n> to log in again, every one"
    sql(
        db_url,
        "UPDATE jobsys_issues SET title = %s, occurrences = 15321, affected_accounts = 1342"
        " WHERE id = %s",
        (long_title, issue),
    )
    app = _tui.DashboardApp(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.reloads >= 1, "the first read")
        await select(pilot, app, "issues", str(issue))
        for view, more in (("open", []), ("all", ["status"])):
            want = ["id", "title", "count", "accounts", "last seen", *more]
            await until(lambda want=want: columns(app, "issues") == want, f"{view}: {want}")
            [row] = rows(app, "issues")
            assert row[2:4] == ["15321", "1342"], row
            assert row[1].endswith("…") and long_title.startswith(row[1][:-1]), row
            table = app.query_one("#table-issues", DataTable)
            # no sideways scrolling: the columns fit beside the vertical scrollbar
            assert table.virtual_size.width <= table.size.width - _tui.SCROLLBAR_WIDTH
            await pilot.press("a")  # every issue


def box_text(app: _tui.DashboardApp) -> str:
    """The open box's text, its folded lines joined again."""
    return " ".join(app.screen.text.split())  # type: ignore[attr-defined]


async def test_a_failure_the_rules_refuse_says_why_and_is_not_retried_at_80x24(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure's detail says what `failures show` says: whether `jobsys retry` would
    retry it, and if not why (rules.refusal_known). `r` on one the rules refuse is not
    offered (no dry run, no question): the box says why. One they let go on still shows
    the dry run and asks."""
    monkeypatch.setattr(_tui, "POLL_SECONDS", 0.5)
    runtime, succeeded = bulk_failed_jobs(db_url, 2)
    [job] = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (succeeded,))
    sql(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job["job_id"],))
    sql(db_url, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (job["job_id"],))
    refusal = "would retry: no: skipped_not_failed: the job is succeeded, not failed"
    app = _tui.DashboardApp(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.reloads >= 1, "the first read")
        await select(pilot, app, "failures", str(succeeded))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, _tui.TextScreen), "the detail")
        assert refusal in box_text(app), box_text(app)
        await pilot.press("enter")  # closes it
        await until(lambda: not isinstance(app.screen, _tui.TextScreen), "the detail closed")
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, _tui.TextScreen), "why not")
        assert box_text(app) == f"retry failure {succeeded}: not offered {refusal}"
        await pilot.press("enter")
        assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]

        await select(pilot, app, "failures", str(runtime))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, _tui.TextScreen), "the detail")
        assert (
            f"would retry: yes, as far as the failure and its job tell (`jobsys retry"
            f" {runtime} --dry-run` checks the rest)" in box_text(app)
        ), box_text(app)
        await pilot.press("enter")
        await until(lambda: not isinstance(app.screen, _tui.TextScreen), "the detail closed")
        await pilot.press("r")  # the dry run, then the question
        await until(lambda: isinstance(app.screen, _tui.ConfirmScreen), "the question")
        assert f"failure {runtime} (job" in box_text(app) and "retry 1 of 1?" in box_text(app)
        await pilot.press("n")
    assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]


async def test_resolving_a_resolved_issue_with_keys_says_it_already_was(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`s` on an issue resolved already (by alice) noted 'issue N: resolved', as if this
    operator had resolved it (operator walk-through): since 94766fc nothing is written,
    and the note says so, as the CLI and the web console do."""
    monkeypatch.setattr(_tui, "POLL_SECONDS", 0.5)
    issue = make_issue(db_url, status="resolved")
    sql(db_url, "UPDATE jobsys_issues SET resolved_by = 'alice', resolved_at = now() "
                "WHERE id = %s RETURNING id", (issue,))  # fmt: skip
    app = _tui.DashboardApp(settings)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(lambda: app.reloads >= 1, "the first read")
        await pilot.press("3", "a")  # every issue, the resolved one too
        await select(pilot, app, "issues", str(issue))
        await act(pilot, app, "s", f"resolve issue {issue}: test issue?")
        await until(lambda: "already" in app.note, "the note")
        assert app.note.startswith(f"issue {issue} is already resolved (by alice at ")
        assert app.note.endswith(" UTC); nothing was changed"), app.note
    [row] = sql(db_url, "SELECT resolved_by FROM jobsys_issues WHERE id = %s", (issue,))
    assert row["resolved_by"] == "alice"
