"""The dashboard's layout: a snapshot in, lines of at most ``width`` characters out.

Pure text (no Rich, no I/O), so any terminal size can be tested: sections get
their title and a minimum of rows, spare rows go to them in priority order, and a
section with more rows than it got ends with "… N more". Below ``MIN_FULL_HEIGHT``
lines or ``MIN_FULL_WIDTH`` columns the view turns compact (one summary line per
section); nothing here raises on a small terminal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

MIN_FULL_WIDTH = 60
MIN_FULL_HEIGHT = 16
LANES_COLUMN_WIDTH = 46  # two lane columns side by side from twice this
KIND_LABELS = {"authentication": "auth"}


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{seconds / 86400:.1f}d"


def hhmm(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M") if value else "--:--"


def clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def totals(snapshot: dict[str, Any]) -> dict[str, int]:
    lanes = snapshot["lanes"]
    last = snapshot["throughput"][-1] if snapshot["throughput"] else {}
    return {
        "waiting": sum(lane["waiting"] for lane in lanes),
        "running": sum(lane["busy"] for lane in lanes),
        "succeeded_per_min": int(last.get("succeeded", 0)),
        "failed_per_min": int(last.get("failed", 0)),
        "open_issues": snapshot["open_issues"]["total"],
    }


def header(snapshot: dict[str, Any] | None, status: str, width: int) -> list[str]:
    now = datetime.now(UTC).strftime("%H:%M:%SZ")
    if snapshot is None:
        return [clip(f"jobsys dashboard  {now}", width), clip(status or "loading…", width)]
    t = totals(snapshot)
    first = (
        f"jobsys {now}  waiting {t['waiting']}  running {t['running']}  "
        f"ok/min {t['succeeded_per_min']}  failed/min {t['failed_per_min']}  "
        f"issues {t['open_issues']}"
    )
    second = (
        status or f"q quits · redrawn on events · last read {snapshot['database_ms']:.0f} ms db"
    )
    return [clip(first, width), clip(second, width)]


def lane_rows(snapshot: dict[str, Any], width: int) -> list[str]:
    cells = []
    lanes = sorted(
        snapshot["lanes"], key=lambda lane: (-(lane["busy"] + lane["waiting"]), lane["lane"] or "")
    )
    for lane in lanes:
        name = lane["lane"] or f"(no lane) {lane['queues'][0]}"
        cells.append(
            f"{clip(name, 18):<18} {lane['busy']:>4}/{lane['concurrency']:<4}"
            f"{lane['waiting']:>8} {age(lane['oldest_wait_seconds']):>8}"
        )
    head = f"{'lane':<18} {'busy/conc':<9}{'waiting':>8} {'oldest':>8}"
    columns = 2 if width >= 2 * LANES_COLUMN_WIDTH else 1
    if columns == 1:
        return [head, *cells]
    half = (len(cells) + 1) // 2
    rows = [f"{head:<{LANES_COLUMN_WIDTH}}{head}"]
    for i in range(half):
        right = cells[half + i] if half + i < len(cells) else ""
        rows.append(f"{cells[i]:<{LANES_COLUMN_WIDTH}}{right}")
    return rows


def throughput_rows(snapshot: dict[str, Any]) -> list[str]:
    minutes = snapshot["throughput"]
    ok = "".join(f"{m['succeeded']:>6}" for m in minutes)
    failed = "".join(f"{m['failed'] + m['retried']:>6}" for m in minutes)
    pickup = snapshot["pickup_latency"]
    latency = (
        f"pickup latency p50 {age(pickup['p50_seconds'])}  p95 {age(pickup['p95_seconds'])}"
        f"  max {age(pickup['max_seconds'])}  ({pickup['samples']} starts, 5 min)"
        if pickup["samples"]
        else "pickup latency: no job started in the last 5 minutes"
    )
    return [
        f"{'minute':<9}" + "".join(f"{hhmm(m['minute']):>6}" for m in minutes),
        f"{'ok':<9}{ok}",
        f"{'failed':<9}{failed}",
        latency,
    ]


def failure_rows(snapshot: dict[str, Any]) -> list[str]:
    return [
        f"{hhmm(f['occurred_at'])} {KIND_LABELS.get(f['kind'], f['kind'])[:9]:<9} "
        f"{clip(f['task'], 24):<24} "
        f"acct {clip(str(f['account_id'] or '-'), 8):<8} {f['error_class']}: {f['message']}"
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
        rows.append(f"{when:<15} {clip(run['entry'], 30):<30} {kind:<7} {run['task'] or ''}")
    return rows


def worker_rows(snapshot: dict[str, Any]) -> list[str]:
    rows = [
        f"{w['hostname']}:{w['pid']:<7} {w['status']:<8} "
        f"heartbeat {age(w['heartbeat_age_seconds']):>6}  lanes {','.join(w['lanes'] or [])}"
        for w in snapshot["workers"]["processes"]
    ]
    if not rows:
        rows = [
            f"procrastinate worker {w['id']:<6} heartbeat {age(w['heartbeat_age_seconds']):>6}"
            for w in snapshot["workers"]["procrastinate"]
        ]
    return rows


def worker_count(snapshot: dict[str, Any]) -> int:
    workers = snapshot["workers"]
    return len(workers["processes"]) or len(workers["procrastinate"])


def sections(snapshot: dict[str, Any], width: int) -> list[tuple[str, list[str], int]]:
    """(title, rows, minimum rows) in priority order."""
    issues = snapshot["open_issues"]
    return [
        ("LANES", lane_rows(snapshot, width), 3),
        ("THROUGHPUT per minute (oldest → newest)", throughput_rows(snapshot), 4),
        ("RECENT FAILURES", failure_rows(snapshot) or ["none"], 1),
        (f"OPEN ISSUES ({issues['total']})", issue_rows(snapshot) or ["none"], 1),
        ("SCHEDULE: running fan-outs, next runs", schedule_rows(snapshot) or ["no entries"], 1),
        (
            f"WORKERS ({worker_count(snapshot)})",
            worker_rows(snapshot) or ["no worker is running"],
            1,
        ),
    ]


def compact(snapshot: dict[str, Any], width: int, height: int) -> list[str]:
    t = totals(snapshot)
    busiest = sorted(snapshot["lanes"], key=lambda lane: -(lane["busy"] + lane["waiting"]))[:3]
    lines = [
        "lanes "
        + "  ".join(f"{lane['lane']} {lane['busy']}/{lane['waiting']}" for lane in busiest),
        f"ok/min {t['succeeded_per_min']} failed/min {t['failed_per_min']}",
        f"failures {len(snapshot['recent_failures'])} recent  issues {t['open_issues']} open",
        f"workers {worker_count(snapshot)}",
        "(enlarge the terminal for the full view)",
    ]
    return [clip(line, width) for line in lines]


def render(
    snapshot: dict[str, Any] | None, width: int, height: int | None, status: str = ""
) -> list[str]:
    """The screen as lines; ``height`` None means as long as needed (``--once``)."""
    width = max(width, 10)
    try:
        lines = header(snapshot, status, width)
        if snapshot is None:
            return lines[: height or None]
        if height is not None and (height < MIN_FULL_HEIGHT or width < MIN_FULL_WIDTH):
            return (lines + compact(snapshot, width, height))[: max(height, 1)]
        parts = sections(snapshot, width)
        if height is None:
            budget = [len(rows) for _, rows, _ in parts]
        else:
            budget = _allocate(parts, height - len(lines))
        for (title, rows, _), count in zip(parts, budget, strict=True):
            if count <= 0:
                continue
            lines.append(clip(title, width))
            shown = rows[:count]
            if len(rows) > count:
                shown = [*rows[: count - 1], f"… {len(rows) - count + 1} more"]
            lines.extend(clip("  " + row, width) for row in shown)
        return lines[: height or None]
    except Exception as exc:  # a layout bug must not take the operator's screen down
        return [clip(f"jobsys dashboard: cannot draw ({type(exc).__name__}: {exc})", width)]


def _allocate(parts: list[tuple[str, list[str], int]], available: int) -> list[int]:
    """Rows per section: minimums first (in priority order), then the rest round-robin."""
    budget = [0] * len(parts)
    for i, (_, rows, minimum) in enumerate(parts):
        want = min(len(rows), minimum)
        if available >= want + 1:
            budget[i] = want
            available -= want + 1  # + its title
    grew = True
    while available > 0 and grew:
        grew = False
        for i, (_, rows, _) in enumerate(parts):
            if available > 0 and budget[i] and budget[i] < len(rows):
                budget[i] += 1
                available -= 1
                grew = True
    return budget
