"""Dashboard layout (pure) and coalescing rules: any terminal size, bounded merges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobsys.cli._dashboard_view import render
from jobsys.live.coalesce import MAX_IDS, Coalescer, merge, merge_job_change
from jobsys.live.publish import UnknownTopic

NOW = datetime(2026, 2, 20, 3, 0, tzinfo=UTC)


def snapshot(rows: int = 12) -> dict[str, Any]:
    return {
        "taken_at": NOW,
        "database_ms": 12.5,
        "lanes": [
            {
                "lane": f"lane_{i}",
                "queues": [f"q{i}"],
                "concurrency": 2,
                "processes": 1,
                "busy": i % 3,
                "waiting": i * 10,
                "scheduled": 0,
                "oldest_wait_seconds": 75.0 * i,
            }
            for i in range(8)
        ],
        "throughput": [
            {
                "minute_at": NOW - timedelta(minutes=9 - i),
                "succeeded": 100 + i,
                "failed": i,
                "retried": 1,
            }
            for i in range(10)
        ],
        "pickup_latency": {
            "window_seconds": 300,
            "samples": 40,
            "p50_seconds": 0.2,
            "p95_seconds": 1.5,
            "max_seconds": 4.0,
        },
        "recent_failures": [
            {
                "occurred_at": NOW,
                "kind": "transient",
                "task": "demo.refresh_profile",
                "account_id": str(i),
                "error_class": "TransientError",
                "message": "rate limited " * 5,
            }
            for i in range(rows)
        ],
        "open_issues": {
            "total": rows,
            "latest": [
                {
                    "id": i,
                    "kind": "job_failure",
                    "title": f"issue {i}",
                    "occurrences": 300,
                    "affected_accounts": 40,
                }
                for i in range(rows)
            ],
        },
        "schedule": {
            "next_runs": [
                {
                    "name": f"entry_{i}",
                    "cron": "* * * * *",
                    "task": "demo.t",
                    "fanout": True,
                    "paused": i == 0,
                    "next_run_at": NOW + timedelta(minutes=i),
                    "last_tick_at": None,
                }
                for i in range(rows)
            ],
            "running_fanouts": [
                {
                    "id": 1,
                    "entry": "profile_refresh",
                    "batches_done": 3,
                    "items_enqueued": 1500,
                    "cursor": 1500,
                    "started_at": NOW,
                }
            ],
        },
        "workers": {
            "processes": [
                {
                    "hostname": "host",
                    "pid": i,
                    "status": "running",
                    "heartbeat_age_seconds": 1.0,
                    "lanes": ["base"],
                }
                for i in range(rows)
            ],
            "lane_workers": [],
        },
    }


@pytest.mark.parametrize("width", [1, 10, 39, 40, 59, 60, 79, 80, 120, 250])
@pytest.mark.parametrize("height", [1, 2, 5, 15, 16, 24, 50])
def test_every_size_fits_and_never_raises(width: int, height: int) -> None:
    lines = render(snapshot(), width, height, "")
    assert len(lines) <= max(height, 1)
    assert all(len(line) <= max(width, 10) for line in lines)
    assert not lines[0].startswith("jobsys dashboard: cannot draw")


def test_80x24_shows_every_section() -> None:
    lines = render(snapshot(), 80, 24)
    text = "\n".join(lines)
    assert len(lines) == 24
    for title in (
        "LANES",
        "THROUGHPUT",
        "RECENT FAILURES",
        "OPEN ISSUES (12)",
        "SCHEDULE",
        "WORKERS",
    ):
        assert title in text, title
    assert "more" in text  # long sections say what they cut


def test_small_terminal_is_compact() -> None:
    lines = render(snapshot(), 40, 10)
    assert any("enlarge the terminal" in line for line in lines)


def test_once_shows_everything() -> None:
    lines = render(snapshot(rows=30), 100, None)
    assert sum("issue " in line for line in lines) == 30


def test_status_line_is_shown() -> None:
    lines = render(snapshot(), 80, 24, "DATABASE UNREACHABLE: refused")
    assert lines[1].startswith("DATABASE UNREACHABLE")


def test_merge_sums_counts_and_bounds_ids() -> None:
    pending: dict[str, Any] = {}
    for i in range(100):
        merge(pending, {"succeeded": 1, "id": i, "queue": "sync", "flag": i == 3})
    merge(pending, {"failed": 1, "queue": "profiles"})
    assert pending["events"] == 101
    assert pending["succeeded"] == 100 and pending["failed"] == 1
    assert pending["ids"] == list(range(100))[-MAX_IDS:]
    assert pending["queue"] is None  # differing strings are dropped
    assert pending["flag"] is True


@pytest.mark.parametrize(
    "start",
    [
        {},
        {"events": 3, "started": 2, "ids": [1, 2], "queue": "sync"},
        {"events": 1, "succeeded": "x", "ids": 7, "queue": "other"},
        {"events": 12, "ids": list(range(12)), "queue": None, "failed": 1.5},
    ],
)
def test_the_workers_fast_merge_is_merge(start: dict[str, Any]) -> None:
    """merge_job_change (two per job on the worker's path) gives what merge gives for
    the same change, whatever was pending; so does Coalescer.add_job_change."""
    slow, fast = dict(start), dict(start)
    for i, (what, queue) in enumerate(
        [("started", "sync"), ("succeeded", "sync"), ("failed", "other"), ("aborted", "sync")] * 4
    ):
        merge(slow, {what: 1, "id": 100 + i, "queue": queue})
        merge_job_change(fast, what, 100 + i, queue)
        assert fast == slow and list(fast) == list(slow)
    by_add, by_fast = Coalescer(), Coalescer()
    for job_id, queue in [(1, "sync"), (None, "sync"), (2, None), (True, "sync"), (3, "q")]:
        by_add.add("jobs_changed", {"started": 1, "id": job_id, "queue": queue})
        by_fast.add_job_change("jobs_changed", "started", job_id, queue)
    by_fast.add_job_change("jobs_changed", "weird_id", 4, "q")
    by_add.add("jobs_changed", {"weird_id": 1, "id": 4, "queue": "q"})
    assert by_fast.pending() == by_add.pending()
    with pytest.raises(UnknownTopic):
        Coalescer().add_job_change("Bad Topic", "started", 1, "sync")


async def test_failed_flush_restores_pending() -> None:
    coalescer = Coalescer(max_per_second=10)
    coalescer.add("jobs_changed", {"succeeded": 2})

    async def broken(_: dict[str, dict[str, Any]]) -> None:
        raise OSError("down")

    with pytest.raises(OSError):
        await coalescer.flush_once(broken)
    coalescer.add("jobs_changed", {"succeeded": 1})
    sent: list[dict[str, dict[str, Any]]] = []

    async def ok(taken: dict[str, dict[str, Any]]) -> None:
        sent.append(taken)

    assert await coalescer.flush_once(ok) == 1
    assert sent[0]["jobs_changed"]["succeeded"] == 3
    assert sent[0]["jobs_changed"]["events"] == 2


def shipped_lanes() -> list[dict[str, Any]]:
    """The shipped topology as an operator saw it: capsules idle, the base lane busy."""
    names = [
        "ai",
        "ai_face_queue",
        "ai_metadata_queue",
        "ai_ocr_queue",
        "ai_visual_queue",
        "base",
        "frame_generation",
        "video_processing_queue",
    ]
    return [
        {
            "lane": name,
            "queues": [name],
            "concurrency": 10 if name == "base" else 2,
            "processes": 1,
            "busy": 10 if name == "base" else 0,
            "waiting": 350 if name == "base" else 0,
            "scheduled": 0,
            "oldest_wait_seconds": 40.0 if name == "base" else None,
        }
        for name in names
    ]


def lanes_section(lines: list[str]) -> list[str]:
    start = lines.index("LANES") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("  "))
    return lines[start:end]


def test_80x24_shows_the_busy_base_lane_first() -> None:
    snap = snapshot()
    snap["lanes"] = shipped_lanes()
    shown = lanes_section(render(snap, 80, 24))
    assert shown[1].split()[0] == "base", shown
    assert shown[-1].strip().startswith("… ") and shown[-1].endswith(" more")


def test_lanes_busiest_first_then_oldest_wait() -> None:
    snap = snapshot()
    lanes = shipped_lanes()
    for lane in lanes:
        lane.update(busy=0, waiting=0, oldest_wait_seconds=None)
    by_name = {lane["lane"]: lane for lane in lanes}
    by_name["ai_ocr_queue"].update(busy=2, waiting=5)
    by_name["video_processing_queue"].update(waiting=7, oldest_wait_seconds=300.0)
    by_name["frame_generation"].update(waiting=7, oldest_wait_seconds=10.0)
    snap["lanes"] = lanes
    shown = [row.split()[0] for row in lanes_section(render(snap, 80, None))[1:]]
    assert shown[:3] == ["video_processing_queue", "frame_generation", "ai_ocr_queue"]


@pytest.mark.parametrize("width", [80, 120])
def test_a_cut_always_keeps_the_base_lane(width: int) -> None:
    snap = snapshot(rows=30)
    lanes = shipped_lanes()
    for lane in lanes:  # base idle, every capsule busier
        busy = lane["lane"] != "base"
        lane.update(busy=1 if busy else 0, waiting=5 if busy else 0)
    snap["lanes"] = lanes
    shown = lanes_section(render(snap, width, 24))
    assert any(" more" in row for row in shown), shown  # lanes were cut
    assert any(row.split()[0] == "base" or " base " in row for row in shown), shown
    assert shown[0].split()[0] == "lane"  # the header stays


def test_snapshot_header_advertises_no_keys() -> None:
    once = render(snapshot(), 100, None)
    assert "q quits" not in "\n".join(once)
    assert once[1].startswith("snapshot at 03:00Z")
    live = render(snapshot(), 100, 40)
    assert live[1].startswith("q quits")


def test_more_counts_hidden_lanes_not_rows() -> None:
    snap = snapshot(rows=30)
    snap["lanes"] = shipped_lanes()  # 8 lanes; two columns at 120
    shown = lanes_section(render(snap, 120, 24))
    visible = sum(1 for row in shown[1:-1] for word in row.split() if word in {
        lane["lane"] for lane in snap["lanes"]
    })  # fmt: skip
    assert shown[-1].strip() == f"… {8 - visible} more", shown


def _issue_more(lines: list[str]) -> str:
    start = next(i for i, line in enumerate(lines) if line.startswith("OPEN ISSUES"))
    if "… " in lines[start]:  # one line for the section: "… N more" on its title
        return "… " + lines[start].split("… ", 1)[1].strip()
    section = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        section.append(line)
    return section[-1].strip()


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40), (200, 50)])
def test_more_counts_the_database_total_not_the_rows_loaded(width: int, height: int) -> None:
    snap = snapshot(rows=8)
    snap["open_issues"]["total"] = 17  # 8 loaded, 17 open in the database
    lines = render(snap, width, height)
    assert "OPEN ISSUES (17)" in "\n".join(lines)
    shown = sum(1 for line in lines if line.startswith("  #") and "issue " in line and "x " in line)
    assert _issue_more(lines) == f"… {17 - shown} more", lines


def test_once_says_what_it_did_not_load() -> None:
    snap = snapshot(rows=8)
    snap["open_issues"]["total"] = 17
    snap["failures_last_hour"] = 30
    lines = render(snap, 120, None)
    assert _issue_more(lines) == "… 9 more"
    text = "\n".join(lines)
    assert "RECENT FAILURES (30 failed attempts in the last hour)" in text
    assert "… 22 more" in text  # 30 in the hour, 8 loaded


def test_header_names_what_it_counts_and_agrees_with_the_table() -> None:
    snap = snapshot()
    snap["last_minute"] = {"window_seconds": 60, "succeeded": 7, "failed": 2, "retried": 3}
    lines = render(snap, 120, None)
    assert "60s: 7 ok 2 failed 3 retried  open issues 12" in lines[0]
    rows = {
        line.split()[0]: line for line in lines if line.split()[:1] in (["failed"], ["retried"])
    }
    # the table's rows are the same words: failed = for good, retried = attempts retried
    assert rows["failed"].split()[1:] == [str(i) for i in range(10)]
    assert rows["retried"].split()[1:] == ["1"] * 10


def test_the_compact_view_labels_its_columns() -> None:
    snap = snapshot()
    snap["failures_last_hour"] = 44
    text = "\n".join(render(snap, 59, 15))
    assert "lanes (busy/concurrency, waiting): lane_7 1/2 w70" in text
    assert "failed attempts 1h: 44" in text


def test_the_header_keeps_open_issues_and_pauses_at_80_columns() -> None:
    """At 80 columns, busy figures pushed "open issues N" off the end ("open issues…"),
    and nothing in the header said a queue was paused."""
    snap = snapshot()
    snap["lanes"][0]["waiting"] = 4001
    snap["last_minute"] = {"window_seconds": 60, "succeeded": 1417, "failed": 315, "retried": 7}
    snap["pauses"] = [
        {"queue": "story_downloads", "target": "story_downloads", "paused_at": NOW,
         "paused_by": "alice", "reason": "upstream 429", "until": NOW + timedelta(minutes=27)},
    ]  # fmt: skip
    for width, height in ((80, 24), (80, None)):
        first = render(snap, width, height)[0]
        assert len(first) <= width, first
        assert first.endswith("open issues 12  paused 1"), first
    wide = render(snap, 200, None)[0]
    assert "60s: 1417 ok 315 failed 7 retried  open issues 12  paused 1" in wide
    del snap["pauses"]
    assert render(snap, 80, 24)[0].endswith("open issues 12")
    snap["lanes"][0]["waiting"] = 0
    snap["last_minute"] = {"window_seconds": 60, "succeeded": 141, "failed": 31, "retried": 7}
    first = render(snap, 80, 24)[0]  # the minute's figures stay while they fit
    assert "60s: 141 ok 31 failed 7 retried  open issues 12" in first, first


def test_recent_failures_name_the_error_class_not_its_module() -> None:
    """At 80 columns a failure row ended in `jobsys.errors.Transien…`: the module ate
    the room of the message."""
    snap = snapshot(rows=2)
    for failure in snap["recent_failures"]:
        failure["error_class"] = "jobsys.errors.TransientError"
    text = "\n".join(render(snap, 80, None))
    assert " TransientError: rate l" in text, text
    assert "jobsys.errors" not in text


def test_80x24_with_pauses_shows_the_top_row_of_every_section() -> None:
    """With two queues paused, RECENT FAILURES, OPEN ISSUES and SCHEDULE got one line
    each at 80x24: "… N more" and no row at all (operator walk-through, story 11)."""
    snap = snapshot(rows=12)
    snap["lanes"] = shipped_lanes()
    snap["pauses"] = [
        {"queue": q, "target": q, "paused_at": NOW, "paused_by": "alice", "reason": "429",
         "until": NOW + timedelta(minutes=27)}
        for q in ("story_downloads", "profiles")
    ]  # fmt: skip
    lines = render(snap, 80, 24)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    for title in ("RECENT FAILURES", "OPEN ISSUES", "SCHEDULE", "WORKERS"):
        at = next(i for i, line in enumerate(lines) if line.startswith(title))
        row = lines[at + 1] if at + 1 < len(lines) else ""
        assert row.startswith("  ") and not row.strip().startswith("… "), (title, lines)
    issues = next(line for line in lines if line.startswith("OPEN ISSUES"))
    assert issues.endswith("… 11 more"), issues  # the count moved to the title line
