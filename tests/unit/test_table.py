"""The table layout every list command uses: one line per row, whole tokens."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from jobsys.cli._table import GAP, Col, absolute, human, layout, relative
from jobsys.timespec import short

NOW = datetime(2026, 12, 5, 21, 30, tzinfo=UTC)
COLUMNS = (
    Col("id", kind="id", priority=0),
    Col("occurred_at", "when", kind="time", priority=0),
    Col("task", priority=0),
    Col("error", kind="text", priority=1, min=12, want=24),
    Col("kind", priority=2),
    Col("queue", priority=5),
    Col("job_id", "job", kind="id", wide_only=True),
)


def _rows(n: int = 5) -> list[dict[str, object]]:
    return [
        {
            "id": 1000 + i,
            "occurred_at": NOW - timedelta(minutes=3 * i),
            "task": f"demo.scan_recent_profile_posts_{i}",
            "error": "AuthenticationError: Instagram asks account 33 to log in again " * 2,
            "kind": "authentication",
            "queue": "ai_face_queue",
            "job_id": 50_000 + i,
        }
        for i in range(n)
    ]


def _tokens_of(row: dict[str, object], col: Col) -> str:
    return str(row[col.key])


@pytest.mark.parametrize("width", [60, 80, 100, 120, 160, 200])
def test_a_fitted_table_is_one_line_per_row_and_never_splits_a_token(width: int) -> None:
    rows = _rows()
    shown = layout(rows, COLUMNS, width=width, now=NOW)
    assert len(shown.lines) == len(rows)
    for line in (shown.header, *shown.lines):
        assert len(line) <= width, (width, line)
    names = [c.key for c in shown.columns]
    for row, line in zip(rows, shown.lines, strict=True):
        # atomic cells (ids, names) are whole; the text column ends in an ellipsis if cut
        for col in shown.columns:
            if col.kind in ("id", "name"):
                assert _tokens_of(row, col) in line.split(), (col.key, line)
    assert "job_id" not in names  # wide-only
    # the least important give way first: what is shown is a prefix of the priority order
    shown_priorities = sorted(c.priority for c in shown.columns)
    hidden = [c for c in COLUMNS if not c.wide_only and c not in shown.columns]
    assert all(h.priority >= max(shown_priorities) for h in hidden), (names, hidden)
    assert shown.dropped == tuple(h.title for h in hidden)


def test_too_narrow_for_the_essential_columns_still_one_line_each() -> None:
    shown = layout(_rows(), COLUMNS, width=40, now=NOW)
    assert [c.key for c in shown.columns] == ["id", "occurred_at", "task"]
    assert all(len(line) <= 40 and line.endswith("…") for line in shown.lines)


def test_priorities_decide_what_gives_way_and_text_ends_in_an_ellipsis() -> None:
    rows = _rows(1)
    # id 4 + when 4 + task 32 + error 24 (its want) + kind 14 + 4 gaps = 86
    fits = layout(rows, COLUMNS, width=86, now=NOW)
    assert [c.key for c in fits.columns] == ["id", "occurred_at", "task", "error", "kind"]
    assert fits.lines[0].split()[:3] == ["1000", "now", "demo.scan_recent_profile_posts_0"]
    assert "…" in fits.lines[0]  # the error was cut, and says so
    narrow = layout(rows, COLUMNS, width=85, now=NOW)
    assert [c.key for c in narrow.columns] == ["id", "occurred_at", "task", "error"]
    roomy = layout(rows, COLUMNS, width=400, now=NOW)
    assert "…" not in roomy.lines[0] and "ai_face_queue" in roomy.lines[0]


def test_wide_and_piped_keep_complete_values_and_absolute_times() -> None:
    rows = _rows(2)
    for shown in (
        layout(rows, COLUMNS, width=80, wide=True, now=NOW),
        layout(rows, COLUMNS, width=None, now=NOW),
    ):
        assert "…" not in "".join(shown.lines)
        assert str(rows[1]["error"]).strip() in shown.lines[1]
        assert "2026-12-05T21:27:00Z" in shown.lines[1]
    assert [c.key for c in layout(rows, COLUMNS, width=80, wide=True).columns][-1] == "job_id"
    assert "job_id" not in [c.key for c in layout(rows, COLUMNS, width=None).columns]


def test_a_show_table_fits_but_keeps_absolute_times() -> None:
    shown = layout(_rows(2), COLUMNS, width=80, absolute_times=True, now=NOW)
    assert "2026-12-05T21:27:00Z" in shown.lines[1]
    assert max(len(line) for line in shown.lines) <= 80


def test_cells_are_single_lines_and_numbers_align_right() -> None:
    rows = [{"id": 7, "task": "a\nb\tc", "n": 5}, {"id": 12345, "task": "x", "n": 123}]
    cols = (Col("id", kind="id", priority=0), Col("task"), Col("n", kind="number"))
    shown = layout(rows, cols, width=80, now=NOW)
    assert shown.header == "   id  task     n"
    assert shown.lines == ("    7  a b c    5", "12345  x      123")
    assert GAP == 2


def test_random_tables_always_fit() -> None:
    rnd = random.Random(13)
    for _ in range(300):
        cols = [Col("id", kind="id", priority=0)] + [
            Col(
                f"c{i}",
                kind=rnd.choice(["name", "text", "number", "time"]),
                priority=rnd.randint(1, 5),
            )
            for i in range(rnd.randint(1, 8))
        ]
        rows = [
            {
                "id": rnd.randint(1, 10**6),
                **{
                    c.key: (
                        NOW - timedelta(seconds=rnd.randint(0, 10**6))
                        if c.kind == "time"
                        else rnd.randint(0, 10**4)
                        if c.kind == "number"
                        else "w" * rnd.randint(1, 40)
                    )
                    for c in cols[1:]
                },
            }
            for _ in range(rnd.randint(1, 6))
        ]
        width = rnd.randint(30, 200)
        shown = layout(rows, cols, width=width, now=NOW)
        assert all(len(line) <= width for line in (shown.header, *shown.lines))
        for row, line in zip(rows, shown.lines, strict=True):
            assert str(row["id"]) in line.split()


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "now"),
        (timedelta(seconds=45), "45s ago"),
        (timedelta(minutes=3, seconds=5), "3m ago"),
        (timedelta(hours=5), "5h ago"),
        (timedelta(days=2, hours=3), "2d ago"),
        (timedelta(minutes=-4), "in 4m"),
    ],
)
def test_relative_times(delta: timedelta, text: str) -> None:
    assert relative(NOW - delta, NOW) == text


def test_absolute_time_and_durations() -> None:
    assert absolute(datetime(2026, 12, 5, 21, 13, 0, 52869, tzinfo=UTC)) == "2026-12-05T21:13:00Z"
    assert [short(s) for s in (0.42, 12, 185, 7800, 302400)] == [
        "0.4s",
        "12s",
        "3m05s",
        "2h10m",
        "3.5d",
    ]


def test_a_show_time_is_absolute_to_the_second_in_utc_with_its_age() -> None:
    from datetime import timezone

    now = datetime(2026, 12, 5, 19, 16, 0, 52869, tzinfo=UTC)
    at = datetime(2026, 12, 5, 20, 13, 0, 52869, tzinfo=timezone(timedelta(hours=1)))
    assert human(at, now) == "2026-12-05 19:13:00 UTC (3m ago)"


def test_every_issue_keeps_its_status_at_80_columns() -> None:
    """`issues list --all` (and the dashboard's `a`) at 80 columns hid the status, so a
    healed issue read the same as an open one; the open list has no need of it."""
    from datetime import UTC, datetime

    from jobsys.cli.issues import list_columns

    now = datetime(2026, 2, 20, 3, 0, tzinfo=UTC)
    rows = [
        {"id": 33, "title": "KeyError in ops5.refresh_profile: <str>", "occurrences": 1203,
         "affected_accounts": 1200, "last_seen": now, "kind": "job_failure",
         "status": "resolved (healed)", "regression": False},
    ]  # fmt: skip
    for status in ("all", "muted", "resolved"):
        shown = layout(rows, list_columns(status), width=80, now=now)
        assert "status" in [c.key for c in shown.columns], status
        assert "resolved (healed)" in shown.lines[0] and len(shown.lines[0]) <= 80
    assert "status" not in [c.key for c in layout(rows, list_columns("open"), width=80).columns]
