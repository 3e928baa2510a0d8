"""The dashboard's layout: a snapshot in, lines of at most ``width`` characters out.

Pure text (no Rich, no I/O), so any terminal size can be tested: sections get
their title and a minimum of rows, spare rows go to them in priority order, and a
section with more rows than it got ends with "… N more" (on its title line when it
got one line: its top row stays). Lanes come busiest first
(running + waiting, then the oldest wait), and a cut never hides the base lane. Below
``MIN_FULL_HEIGHT`` lines or ``MIN_FULL_WIDTH`` columns the view turns compact (one
summary line per section); nothing here raises on a small terminal. A PAUSED section
(after LANES) appears only while a queue is paused. The live screen's
second line names its keys; a snapshot (``--once``, ``height`` None) does not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobsys.clock import utc
from jobsys.timespec import short

MIN_FULL_WIDTH = 60
MIN_FULL_HEIGHT = 16
LANE_NAME_WIDTH = (18, 24)  # the lane column fits the longest name within these
LANE_CELL_EXTRA = 28  # a lane cell: its name, then busy/conc, waiting, oldest, a gap
BASE_LANE = "base"  # always shown, however many lanes are cut
KIND_LABELS = {"authentication": "auth"}
FAILURES_WINDOW_SECONDS = 3600  # snapshot.FAILURES_WINDOW_SECONDS


def age(seconds: float | None) -> str:
    return short(seconds)


def hhmm(value: datetime | None) -> str:
    return utc(value).strftime("%H:%M") if value else "--:--"


def clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def totals(snapshot: dict[str, Any]) -> dict[str, int]:
    """The header's figures: jobs waiting and running; over the last full sliding
    minute, jobs that succeeded, jobs that failed for good, and failed attempts that
    will be retried (the throughput table's ok / failed / retried rows); open issues."""
    lanes = snapshot["lanes"]
    last = snapshot.get("last_minute", {})
    return {
        "waiting": sum(lane["waiting"] for lane in lanes),
        "running": sum(lane["busy"] for lane in lanes),
        "succeeded_last_minute": int(last.get("succeeded", 0)),
        "failed_last_minute": int(last.get("failed", 0)),
        "retried_last_minute": int(last.get("retried", 0)),
        "open_issues": snapshot["open_issues"]["total"],
    }


def header(
    snapshot: dict[str, Any] | None, status: str, width: int, live: bool = True
) -> list[str]:
    now = datetime.now(UTC).strftime("%H:%M:%SZ")
    if snapshot is None:
        return [clip(f"jobsys dashboard  {now}", width), clip(status or "loading…", width)]
    first = header_line(snapshot, now, width)
    read = f"last read {snapshot['database_ms']:.0f} ms db"
    second = status or (
        f"q quits · redrawn on events · {read}"
        if live
        else f"snapshot at {hhmm(snapshot['taken_at'])}Z · {read}"
    )
    return [clip(first, width), clip(second, width)]


def header_line(snapshot: dict[str, Any], now: str, width: int) -> str:
    """The figures, and how many queues are paused: in full when they fit, else
    without the seconds, then without the last minute's (the THROUGHPUT section has
    them), so the open issues and the pauses are never the part cut off at 80 columns."""
    t = totals(snapshot)
    paused = len({p["queue"] for p in snapshot.get("pauses", [])})
    ok, failed, retried = (
        t["succeeded_last_minute"], t["failed_last_minute"], t["retried_last_minute"]
    )  # fmt: skip
    tail = f"open issues {t['open_issues']}" + (f"  paused {paused}" if paused else "")
    waiting = f"waiting {t['waiting']}  running {t['running']}"
    candidates = (
        f"{now}  {waiting}  60s: {ok} ok {failed} failed {retried} retried  {tail}",
        f"{now[:5]}Z  {waiting}  60s: {ok} ok {failed} failed {retried} retried  {tail}",
        f"{now}  {waiting}  {tail}",
    )
    return next((c for c in candidates if len(c) <= width), clip(candidates[-1], width))


def busiest_first(lanes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Running + waiting, then the oldest wait, descending; then by name."""
    return sorted(
        lanes,
        key=lambda lane: (
            -(lane["busy"] + lane["waiting"]),
            -(lane["oldest_wait_seconds"] or 0.0),
            lane["lane"] or "",
        ),
    )


def lane_rows(snapshot: dict[str, Any], width: int) -> tuple[list[str], set[int], list[int]]:
    """The LANES rows (a header, then lanes busiest first, row by row when two
    columns fit), the indexes of the rows a cut must keep (the header, the base
    lane), and how many lanes each row shows."""
    cells = []
    lanes = busiest_first(snapshot["lanes"])
    base = next((i for i, lane in enumerate(lanes) if lane["lane"] == BASE_LANE), None)
    names = [lane["lane"] or f"(no lane) {lane['queues'][0]}" for lane in lanes]
    low, high = LANE_NAME_WIDTH
    name_width = min(max([low, *map(len, names)]), high)
    column_width = name_width + LANE_CELL_EXTRA  # two columns side by side from twice this
    for lane, name in zip(lanes, names, strict=True):
        cells.append(
            f"{clip(name, name_width):<{name_width}} {lane['busy']:>4}/{lane['concurrency']:<4}"
            f"{lane['waiting']:>8} {age(lane['oldest_wait_seconds']):>8}"
        )
    head = f"{'lane':<{name_width}} {'busy/conc':<9}{'waiting':>8} {'oldest':>8}"
    columns = 2 if width >= 2 * column_width else 1
    if columns == 1:
        keep = {0} | ({base + 1} if base is not None else set())
        return [head, *cells], keep, [0] + [1] * len(cells)
    # Row by row (1 2 / 3 4), so a cut keeps the busiest lanes of both columns.
    rows = [f"{head:<{column_width}}{head}"]
    for i in range(0, len(cells), 2):
        right = cells[i + 1] if i + 1 < len(cells) else ""
        rows.append(f"{cells[i]:<{column_width}}{right}".rstrip())
    keep = {0} | ({base // 2 + 1} if base is not None else set())
    return rows, keep, [0] + [min(2, len(cells) - i) for i in range(0, len(cells), 2)]


def paused_rows(snapshot: dict[str, Any]) -> list[str]:
    """One row per pause action in effect (a lane's pause is one row, not one per
    queue): what, how long ago, by whom, why, and the time left."""
    taken = snapshot["taken_at"]
    groups: dict[tuple[Any, ...], list[str]] = {}
    for pause in snapshot.get("pauses", []):
        key = (pause["target"], pause["paused_at"], pause["paused_by"], pause["reason"],
               pause["until"])  # fmt: skip
        groups.setdefault(key, []).append(pause["queue"])
    rows = []
    for (target, paused_at, by, reason, until), queues in groups.items():
        what = queues[0] if queues == [target] else f"{target} ({len(queues)} queues)"
        if target == "--all":
            what = f"all queues ({len(queues)})"
        row = f"{what}: paused {age((taken - paused_at).total_seconds())} ago by {by}"
        row += f": {reason}" if reason else ""
        row += f" (resumes in {age((until - taken).total_seconds())})" if until else ""
        rows.append(row)
    return rows


def throughput_rows(snapshot: dict[str, Any]) -> list[str]:
    minutes = snapshot["throughput"]
    ok = "".join(f"{m['succeeded']:>6}" for m in minutes)
    failed = "".join(f"{m['failed']:>6}" for m in minutes)
    retried = "".join(f"{m['retried']:>6}" for m in minutes)
    pickup = snapshot["pickup_latency"]
    latency = (
        f"pickup latency p50 {age(pickup['p50_seconds'])}  p95 {age(pickup['p95_seconds'])}"
        f"  max {age(pickup['max_seconds'])}  ({pickup['samples']} starts, 5 min)"
        if pickup["samples"]
        else "pickup latency: no job started in the last 5 minutes"
    )
    return [
        f"{'minute':<9}" + "".join(f"{hhmm(m['minute_at']):>6}" for m in minutes),
        f"{'ok':<9}{ok}",
        f"{'failed':<9}{failed}",
        f"{'retried':<9}{retried}",
        latency,
    ]


def failure_rows(snapshot: dict[str, Any]) -> list[str]:
    return [
        f"{hhmm(f['occurred_at'])} {KIND_LABELS.get(f['kind'], f['kind'])[:9]:<9} "
        f"{clip(f['task'], 24):<24} "
        f"acct {clip(str(f['account_id'] or '-'), 8):<8} "
        f"{f['error_class'].rsplit('.', 1)[-1]}: {f['message']}"  # the class, not its module
        for f in snapshot["recent_failures"]
    ]


def issue_rows(snapshot: dict[str, Any]) -> list[str]:
    return [
        f"#{i['id']:<5} {i['kind'][:14]:<14} {i['occurrences']:>7}x "
        f"{i['affected_accounts']:>5} acct {i['title']}"
        for i in snapshot["open_issues"]["latest"]
    ]


def schedule_rows(snapshot: dict[str, Any]) -> list[str]:
    rows = [
        f"fan-out {f['entry']} (run {f['id']}): {f['batches_done']} batches, "
        f"{f['items_enqueued']} items, cursor {f['cursor']}, since {hhmm(f['started_at'])}"
        for f in snapshot["schedule"]["running_fanouts"]
    ]
    taken = snapshot["taken_at"]
    for run in snapshot["schedule"]["next_runs"]:
        upcoming = run["next_run_at"]
        when = (
            "paused"
            if run["paused"] or upcoming is None
            else f"{hhmm(upcoming)} in {age((upcoming - taken).total_seconds())}"
        )
        kind = "fan-out" if run["fanout"] else "task"
        rows.append(f"{when:<15} {clip(run['name'], 30):<30} {kind:<7} {run['task'] or ''}")
    return rows


def worker_rows(snapshot: dict[str, Any]) -> list[str]:
    rows = [
        f"{w['hostname']}:{w['pid']:<7} {w['status']:<8} "
        f"heartbeat {age(w['heartbeat_age_seconds']):>6}  lanes {','.join(w['lanes'] or [])}"
        for w in snapshot["workers"]["processes"]
    ]
    if not rows:
        rows = [
            f"lane worker {w['id']:<6} heartbeat {age(w['heartbeat_age_seconds']):>6}"
            for w in snapshot["workers"]["lane_workers"]
        ]
    return rows


def worker_count(snapshot: dict[str, Any]) -> int:
    workers = snapshot["workers"]
    return len(workers["processes"]) or len(workers["lane_workers"])


#: (title, rows, minimum rows, rows a cut must keep, items per row: None for one each,
#: items the database counted beyond the rows loaded)
Section = tuple[str, list[str], int, set[int], list[int] | None, int]


def unloaded_failures(snapshot: dict[str, Any]) -> int:
    """Failed attempts of the last hour that RECENT FAILURES did not load."""
    taken = snapshot["taken_at"]
    loaded = sum(
        1
        for f in snapshot["recent_failures"]
        if (taken - f["occurred_at"]).total_seconds() < FAILURES_WINDOW_SECONDS
    )
    return max(0, int(snapshot.get("failures_last_hour", loaded)) - loaded)


def sections(snapshot: dict[str, Any], width: int) -> list[Section]:
    """The sections in priority order."""
    issues = snapshot["open_issues"]
    lanes, keep, per_row = lane_rows(snapshot, width)
    paused = paused_rows(snapshot)
    hour = snapshot.get("failures_last_hour")
    failures_title = "RECENT FAILURES" + (
        f" ({hour} failed attempts in the last hour)" if hour is not None else ""
    )
    return [
        ("LANES", lanes, 3, keep, per_row, 0),
        *([("PAUSED", paused, 1, set(), None, 0)] if paused else []),
        (
            "THROUGHPUT per minute (oldest → newest): jobs ok, jobs failed for good, "
            "failed attempts retried",
            throughput_rows(snapshot),
            5,
            set(),
            None,
            0,
        ),
        (
            failures_title,
            failure_rows(snapshot) or ["none"],
            1,
            set(),
            None,
            unloaded_failures(snapshot),
        ),
        (
            f"OPEN ISSUES ({issues['total']})",
            issue_rows(snapshot) or ["none"],
            1,
            set(),
            None,
            max(0, issues["total"] - len(issues["latest"])),
        ),
        (
            "SCHEDULE: running fan-outs, next runs",
            schedule_rows(snapshot) or ["no entries"],
            1,
            set(),
            None,
            0,
        ),
        (
            f"WORKERS ({worker_count(snapshot)})",
            worker_rows(snapshot) or ["no worker is running"],
            1,
            set(),
            None,
            0,
        ),
    ]


def cut(
    rows: list[str],
    count: int,
    keep: set[int],
    per_row: list[int] | None = None,
    unloaded: int = 0,
) -> list[str]:
    """``count`` lines for ``rows``: the first rows, the ones in ``keep`` (in order)
    whatever their place, and "… N more" last (N counts items: ``per_row[i]`` in row i,
    plus the ``unloaded`` items the database counted but the snapshot did not load)."""
    if len(rows) <= count and not unloaded:
        return rows
    if len(rows) < count:
        return [*rows, f"… {unloaded} more"]
    room = max(count - 1, 0)
    chosen = sorted(i for i in keep if i < len(rows))[:room]
    for i in range(len(rows)):
        if len(chosen) >= room:
            break
        if i not in chosen:
            chosen.append(i)
    hidden = [i for i in range(len(rows)) if i not in chosen]
    more = (sum(per_row[i] for i in hidden) if per_row else len(hidden)) + unloaded
    return [*(rows[i] for i in sorted(chosen)), f"… {more} more"]


def compact(snapshot: dict[str, Any], width: int, height: int) -> list[str]:
    t = totals(snapshot)
    busiest = busiest_first(snapshot["lanes"])[:3]
    hour = snapshot.get("failures_last_hour", len(snapshot["recent_failures"]))
    lines = [
        "lanes (busy/concurrency, waiting): "
        + "  ".join(
            f"{lane['lane']} {lane['busy']}/{lane['concurrency']} w{lane['waiting']}"
            for lane in busiest
        ),
        f"last 60s: {t['succeeded_last_minute']} ok, {t['failed_last_minute']} failed, "
        f"{t['retried_last_minute']} retried",
        f"failed attempts 1h: {hour}  open issues: {t['open_issues']}",
        f"workers: {worker_count(snapshot)}",
        "(enlarge the terminal for the full view)",
    ]
    return [clip(line, width) for line in lines]


def render(
    snapshot: dict[str, Any] | None, width: int, height: int | None, status: str = ""
) -> list[str]:
    """The screen as lines; ``height`` None means as long as needed (``--once``)."""
    width = max(width, 10)
    try:
        lines = header(snapshot, status, width, live=height is not None)
        if snapshot is None:
            return lines[: height or None]
        if height is not None and (height < MIN_FULL_HEIGHT or width < MIN_FULL_WIDTH):
            return (lines + compact(snapshot, width, height))[: max(height, 1)]
        parts = sections(snapshot, width)
        if height is None:
            budget = [_lines(part) for part in parts]
        else:
            budget = _allocate(parts, height - len(lines))
        for (title, rows, _, keep, per_row, unloaded), count in zip(parts, budget, strict=True):
            if count <= 0:
                continue
            if count == 1 and count < _lines((title, rows, 0, keep, per_row, unloaded)):
                # One line would be "… N more" and no row: show the top row and say
                # "… N more" on the title line instead.
                *shown, more = cut(rows, 2, keep, per_row, unloaded)
                lines.append(clip(title, width - len(more) - 2) + "  " + more)
            else:
                lines.append(clip(title, width))
                shown = cut(rows, count, keep, per_row, unloaded)
            lines.extend(clip("  " + row, width) for row in shown)
        return lines[: height or None]
    except Exception as exc:  # a layout bug must not take the operator's screen down
        return [clip(f"jobsys dashboard: cannot draw ({type(exc).__name__}: {exc})", width)]


def _lines(part: Section) -> int:
    """Lines a section needs in full: its rows, and "… N more" for what was not loaded."""
    return len(part[1]) + (1 if part[5] else 0)


def _allocate(parts: list[Section], available: int) -> list[int]:
    """Rows per section: minimums first (in priority order), then the rest round-robin."""
    budget = [0] * len(parts)
    for i, part in enumerate(parts):
        want = min(_lines(part), part[2])
        if available >= want + 1:
            budget[i] = want
            available -= want + 1  # + its title
    grew = True
    while available > 0 and grew:
        grew = False
        for i, part in enumerate(parts):
            if available > 0 and budget[i] and budget[i] < _lines(part):
                budget[i] += 1
                available -= 1
                grew = True
    return budget
