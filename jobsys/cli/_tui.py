"""The interactive dashboard (``jobsys dashboard`` on a terminal Textual can drive).

Panes (lanes, failures, issues, schedule, workers, pipelines, jobs) are tables of the
same rows and columns as the list commands (``Col`` specs and cells from ``_table``);
``enter`` opens a row's detail (the data of its ``show`` command); actions ask first,
a retry shows the dry-run verdicts before it asks. Every read and action goes through
the same domain functions as the CLI. Imported only by ``jobsys dashboard``: Textual
is never loaded for ``--help`` or any other command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from jobsys.cli import _dashboard_view
from jobsys.cli._context import config_of
from jobsys.cli._output import fold
from jobsys.cli._table import Col, cell, clip, layout
from jobsys.settings import Settings

if TYPE_CHECKING:
    from jobsys.config import Config

#: A refresh follows each event on these topics (and every deferral), debounced.
TOPICS = ("jobs_changed", "job_failures_changed", "issues_changed", "dashboard_metrics_changed")
DEBOUNCE_SECONDS = 0.03  # events this close together make one refresh
#: Event refreshes start at least this far apart (each opens a connection per pane):
#: a busy stream of events refreshes 5 times a second, not back to back.
MIN_REFRESH_INTERVAL_SECONDS = 0.2
POLL_SECONDS = 5.0  # the fallback: rates move, and a lost event is caught up
ROWS = 200  # rows loaded per pane
SCROLLBAR_WIDTH = 2  # Textual's default vertical scrollbar, kept free in every pane
#: A box (a detail, the help, a question) takes this share of the screen's width (the
#: ``width: 90%`` of ``ModalScreen VerticalScroll`` in DashboardApp.CSS).
BOX_PERCENT = 90
MUTE_FOR = "2h"
NOTHING = "\x00nothing"  # the row key of an empty pane's explanation: selects nothing

#: The ``?`` screen. Its lines fit the help box of an 80-column terminal (90% of 80
#: less the border and a scrollbar: 66 columns), so Textual never folds one at column
#: 0; a long description goes on under its own column.
HELP = """keys
  1-7, tab  panes: lanes, failures, issues, schedule, workers,
            pipelines, jobs
  up/down   select a row         enter   its detail (as `show`)
  /         filter the pane      escape  clear the filter
  r         retry, after the dry run (failures: the failure, not
            offered if refused; issues: its failures)
  s         resolve an issue     m  mute it for 2h   o  reopen it
  a         issues: every issue (muted, resolved) / those that
            need attention
  p         pause / resume a schedule entry, or a lane (its
            queues) in lanes
  c         cancel a job or a pipeline
  ?         this help            q  quit
Every action asks first (y confirms, any other key cancels)."""


@dataclass(frozen=True)
class Pane:
    id: str
    title: str
    key: str  # the row field that identifies a row
    columns: tuple[Col, ...]
    empty: str  # what an empty pane says instead of a bare header


def _panes() -> tuple[Pane, ...]:
    from jobsys.cli import failures, issues, jobs, pipelines, schedule, workers

    lanes = (
        Col("lane", priority=0),
        Col("busy", kind="number", priority=0),
        Col("concurrency", kind="number", priority=1),
        Col("waiting", kind="number", priority=0),
        Col("oldest_wait_seconds", "oldest wait", kind="duration", priority=1),
        Col("paused", kind="text", priority=2),
        Col("queues", kind="text", priority=3),
    )
    return (
        Pane("lanes", "1 lanes", "lane", lanes, "no lanes configured (config/queues.yaml)"),
        Pane("failures", "2 failures", "id", failures.LIST_COLUMNS, "no failures recorded"),
        Pane(
            "issues",
            "3 issues",
            "id",
            issues.LIST_COLUMNS,
            "no issue needs attention (`jobsys issues list --all` for every issue)",
        ),
        Pane("schedule", "4 schedule", "name", schedule.LIST_COLUMNS, "no schedule entries"),
        Pane(
            "workers",
            "5 workers",
            "id",
            workers.LIST_COLUMNS,
            "no worker process is running (start one: `jobsys worker`)",
        ),
        Pane("pipelines", "6 pipelines", "id", pipelines.LIST_COLUMNS, "no pipelines"),
        Pane(
            "jobs",
            "7 jobs",
            "id",
            jobs.LIST_COLUMNS,
            "idle: no job is waiting or running (finished ones: `jobsys jobs list -s succeeded`)",
        ),
    )


# --- Reads: the list commands' domain functions -------------------------------------


async def load(settings: Settings, *, all_issues: bool = False) -> dict[str, Any]:
    """Every pane's rows and the snapshot for the header, read once; the issues pane
    holds what needs attention (``issues list``), or every issue (``--all``)."""
    from jobsys.failures import filters
    from jobsys.failures import service as failures_service
    from jobsys.issues import service as issues_service
    from jobsys.jobs.browser import JobFilters, list_jobs
    from jobsys.lanes import workers as workers_service
    from jobsys.live.dashboard import snapshot_once
    from jobsys.pipelines.service import list_pipelines
    from jobsys.schedule import service as schedule_service

    # The files, and the files with the application's tasks (what plans or explains jobs).
    config, with_tasks = config_of(settings), config_of(settings, with_tasks=True)
    # The reads run side by side, each on its own connection: a refresh takes as long
    # as the slowest of them, not their sum (it follows every event).
    reads: list[Any] = await asyncio.gather(
        snapshot_once(settings, config),
        failures_service.list_failures(
            settings, lambda: config, filters.failure_filters(), limit=ROWS
        ),
        issues_service.list_issues(
            settings, lambda: config, limit=ROWS, status="all" if all_issues else "open"
        ),
        list_jobs(settings, with_tasks, JobFilters(statuses=("todo", "doing"), limit=ROWS)),
        schedule_service.list_entries(settings, with_tasks),
        workers_service.list_workers(settings, config),
        list_pipelines(settings, config, status=None, since=None, limit=ROWS),
    )
    snapshot, failures, issues, jobs, schedule, workers, pipelines = reads
    return {
        "snapshot": snapshot,
        "lanes": [
            {
                **lane,
                "lane": lane["lane"] or f"(no lane) {lane['queues'][0]}",
                "paused": ", ".join(lane.get("paused_queues") or []) or None,
                "queues": ", ".join(lane["queues"]),
                "target": lane["lane"] or lane["queues"][0],  # what `queues pause` takes
            }
            for lane in _dashboard_view.busiest_first(snapshot["lanes"])
        ],
        "failures": [
            {**f, "error": f"{f['error_class'].rsplit('.', 1)[-1]}: {f['message']}"}
            for f in failures["failures"]
        ],
        "issues": [{**i, "status": _issue_status(i)} for i in issues["issues"]],
        "schedule": schedule,
        "workers": [
            {**w, "lanes_text": ", ".join(w["lanes"]), "running_text": str(len(w["running_jobs"]))}
            for w in workers
        ],
        "pipelines": pipelines,
        "jobs": jobs,
    }


def _issue_status(issue: dict[str, Any]) -> str:
    from jobsys.cli.issues import status_text

    return status_text(issue)


async def detail(settings: Settings, pane: str, key: Any) -> dict[str, Any]:
    """What the pane's ``show`` command shows for this row."""
    if pane == "failures":  # as `failures show`: whether `jobsys retry` would retry it
        from jobsys.cli.failures import shown, text_view

        failure, state = await shown(settings, lambda: config_of(settings), int(key))
        failure["retry_state"] = state  # in words, as its job is now
        return text_view(failure)
    if pane == "issues":
        from jobsys.issues.service import show_issue

        return await show_issue(settings, lambda: config_of(settings), int(key))
    if pane == "workers":
        from jobsys.lanes.workers import show_worker

        return await show_worker(settings, config_of(settings), str(key))
    if pane == "pipelines":
        from jobsys.pipelines.service import show_pipeline

        return await show_pipeline(settings, config_of(settings), int(key))
    if pane == "jobs":
        from jobsys.jobs.browser import show_job

        return await show_job(settings, config_of(settings, with_tasks=True), int(key))
    raise KeyError(pane)


def box_width(screen_width: int) -> int:
    """Columns of text a box (detail, help, question) shows in one line: its share of
    the screen less its border and a scrollbar."""
    return screen_width * BOX_PERCENT // 100 - 2 - SCROLLBAR_WIDTH


def detail_lines(data: dict[str, Any], width: int) -> list[str]:
    """``key: value`` lines, a long value folded under itself (``width`` columns); a
    list of objects as a table under its name."""
    now = datetime.now(UTC)
    lines: list[str] = []
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((key, value))
            continue
        if isinstance(value, dict) and isinstance(value.get("steps"), list):
            tables.append((f"{key} steps", value["steps"]))
            value = {k: v for k, v in value.items() if k != "steps"}
        shown = cell(
            value,
            Col(key, kind="time" if key.endswith("_at") or isinstance(value, datetime) else "name"),
            now=now,
            absolute_times=True,
        )
        lines.append(fold(f"{key.replace('_', ' ')}: {shown}", width, indent=len(key) + 2))
    for name, rows in tables:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        cols = [
            Col(k, kind="time" if k.endswith("_at") else "text", priority=i)
            for i, k in enumerate(keys)
        ]
        shown_table = layout(rows, cols, width=width, absolute_times=True, now=now)
        lines += ["", name.replace("_", " "), shown_table.header, *shown_table.lines]
    return lines


# --- Screens ----------------------------------------------------------------------


class TextScreen(ModalScreen[None]):
    """A detail or the help: scrollable text; escape, q or enter closes it."""

    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("q", "close", "close"),
        Binding("enter", "close", "close"),
    ]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(fold(self.text, box_width(self.app.size.width)), markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """What an action will do; y confirms, any other key cancels."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            text = fold(self.text, box_width(self.app.size.width))
            yield Static(f"{text}\n\ny: do it · any other key: cancel", markup=False)

    def on_key(self, event: Any) -> None:
        event.stop()
        self.dismiss(event.key == "y")


class DashboardApp(App[None]):
    TITLE = "jobsys dashboard"
    # The panes fill what the summary and the footer leave, so a long table scrolls
    # inside its pane: the screen itself never scrolls (its scrollbar would narrow the
    # summary, wrapping the header line, and push the table past the right edge).
    CSS = """
    #summary { height: auto; }
    #panes { height: 1fr; }
    #panes DataTable { height: 1fr; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    ModalScreen { align: center middle; }
    ModalScreen VerticalScroll { width: 90%; height: 80%; border: round $accent;
                                 background: $surface; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "keys"),
        Binding("slash", "filter", "filter"),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("enter", "detail", "detail"),
        Binding("r", "retry", "retry"),
        Binding("s", "resolve", "resolve"),
        Binding("m", "mute", "mute 2h"),
        Binding("o", "reopen", "reopen"),
        Binding("a", "all_issues", "all issues", show=False),
        Binding("p", "pause", "pause/resume"),
        Binding("c", "cancel", "cancel"),
        *(Binding(str(i + 1), f"pane({i})", show=False) for i in range(7)),
    ]

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.panes = _panes()
        self.data: dict[str, Any] = {}
        self.filter_text = ""
        self.status = ""  # the database's state (cannot read it), cleared by a good read
        self.note = ""  # what the last action did, until the next one
        self.reloads = 0
        self.all_issues = False  # the issues pane: every issue, not only the open ones
        self.events_lost = False  # the event connection is down: the poll alone refreshes
        self._soon: Any = None  # the pending event refresh (a Textual timer)
        self._last_read = -float("inf")  # when the last read started (monotonic)
        self._reading = asyncio.Lock()

    # layout and refresh

    def compose(self) -> ComposeResult:
        yield Static("connecting…", id="summary", markup=False)
        with TabbedContent(id="panes"):
            for pane in self.panes:
                with TabPane(pane.title, id=pane.id):
                    yield DataTable(id=f"table-{pane.id}", cursor_type="row")
        yield Input(
            placeholder="filter: text in any cell (enter applies, escape clears)", id="filter"
        )
        yield Footer()

    async def on_mount(self) -> None:
        self.set_interval(POLL_SECONDS, self.reload)
        await self.reload()
        self.query_one(f"#table-{self.panes[0].id}", DataTable).focus()
        self.run_worker(self.follow(), group="events", exit_on_error=False)

    async def follow(self) -> None:
        """Refresh on every event of :data:`TOPICS` and every deferral (and after a
        reconnection, which may have missed some), :data:`DEBOUNCE_SECONDS` after it."""
        from jobsys.config.application import load_config
        from jobsys.db.connect import resolve
        from jobsys.live.subscriber import Lost, subscribe

        url = resolve(self.settings, load_config(self.settings, with_tasks=False)).url
        async for message in subscribe(url, topics=TOPICS, with_job_inserts=True):
            self.events_lost = isinstance(message, Lost)
            if self._soon is None:
                wait = self._last_read + MIN_REFRESH_INTERVAL_SECONDS - time.monotonic()
                self._soon = self.set_timer(max(DEBOUNCE_SECONDS, wait), self._refresh_soon)

    async def _refresh_soon(self) -> None:
        self._soon = None
        await self.reload()

    async def reload(self) -> None:
        from jobsys.errors import JobsysError

        async with self._reading:  # the poll and an event never read side by side
            self._last_read = time.monotonic()
            try:
                self.data = await load(self.settings, all_issues=self.all_issues)
                self.status = ""
            except (JobsysError, OSError) as exc:
                self.status = f"cannot read the database: {exc}"
            self.reloads += 1
            self.draw()

    def _columns(self, pane: Pane) -> tuple[Col, ...]:
        """A pane's columns; every issue (``a``) keeps the status that tells them apart."""
        if pane.id != "issues":
            return pane.columns
        from jobsys.cli.issues import list_columns

        return list_columns("all" if self.all_issues else "open")

    def draw(self) -> None:
        snapshot = self.data.get("snapshot")
        width = self.size.width or 80
        head = _dashboard_view.header(snapshot, self.status, width, live=True)
        where = f"  filter: {self.filter_text!r}" if self.filter_text else ""
        if self.events_lost:
            where += f"  (live events lost: refreshing every {POLL_SECONDS:.0f}s)"
        # A pause in effect (who, why, the time left) replaces the keys' hint: the lanes
        # pane has no room for it at 80 columns.
        paused = " · ".join(_dashboard_view.paused_rows(snapshot)) if snapshot else ""
        hint = _dashboard_view.clip(paused, width) if paused else "? keys · enter detail · / filter"
        self.query_one("#summary", Static).update(
            "\n".join([head[0], (self.status or self.note or hint) + where])
        )
        now = datetime.now(UTC)
        for pane in self.panes:
            table = self.query_one(f"#table-{pane.id}", DataTable)
            keep = table.cursor_row
            columns = self._columns(pane)
            rows = [
                row
                for row in self.data.get(pane.id, [])
                if not self.filter_text
                or any(
                    self.filter_text.lower()
                    in cell(row.get(c.key), c, now=now, absolute_times=False).lower()
                    for c in columns
                )
            ]
            # The list commands' fitting: least important columns give way, text is cut
            # with an ellipsis, one line per row (DataTable pads each cell by one a side,
            # and a pane longer than the screen shows a vertical scrollbar beside it).
            room = width - 2 - SCROLLBAR_WIDTH
            shown = layout(rows, columns, width=max(20, room), now=now)
            table.clear(columns=True)
            table.add_columns(*(c.title for c in shown.columns))
            if not rows:  # say why the pane is empty; this row selects nothing
                why = (
                    f"nothing matches the filter {self.filter_text!r} (escape clears it)"
                    if self.filter_text
                    else pane.empty
                )
                blanks = [""] * (len(shown.columns) - 1)
                table.add_row(clip(why, max(20, room)), *blanks, key=NOTHING)
            for row in rows:
                table.add_row(
                    *(
                        clip(cell(row.get(c.key), c, now=now, absolute_times=False), w)
                        for c, w in zip(shown.columns, shown.widths, strict=True)
                    ),
                    key=str(row.get(pane.key)),
                )
            if table.row_count:
                table.move_cursor(row=min(keep, table.row_count - 1))

    # selection

    def current(self) -> tuple[str, str | None]:
        pane = self.query_one("#panes", TabbedContent).active
        table = self.query_one(f"#table-{pane}", DataTable)
        if not table.row_count:
            return pane, None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return pane, None if key == NOTHING else key

    def row(self, pane: str, key: str | None) -> dict[str, Any] | None:
        spec = next(p for p in self.panes if p.id == pane)
        return next((r for r in self.data.get(pane, []) if str(r.get(spec.key)) == key), None)

    def action_pane(self, index: int) -> None:
        pane = self.panes[index].id
        self.query_one("#panes", TabbedContent).active = pane
        self.query_one(f"#table-{pane}", DataTable).focus()

    async def action_all_issues(self) -> None:
        self.all_issues = not self.all_issues
        self.note = "issues: every issue" if self.all_issues else "issues: those open"
        await self.reload()

    def action_help(self) -> None:
        self.push_screen(TextScreen(HELP))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        event.input.remove_class("shown")
        self.action_pane([p.id for p in self.panes].index(self.current()[0]))
        self.draw()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.filter_text = ""
        self.draw()

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        await self.action_detail()  # the table takes enter for itself: same as the key

    async def action_detail(self) -> None:
        pane, key = self.current()
        if key is None:
            return
        if pane in ("lanes", "schedule"):
            data = self.row(pane, key) or {}
        else:
            data = await self._guard(detail(self.settings, pane, key))
            if data is None:
                return
        width = max(40, box_width(self.size.width))
        self.push_screen(TextScreen("\n".join(detail_lines(data, width))))

    # actions, each asked first

    def _config(self) -> Config:
        """The edge's configuration loader the issue and failure services are handed."""
        return config_of(self.settings)

    async def _guard(self, work: Awaitable[Any]) -> Any:
        """Run a read or an action; a refusal or error is shown, never a crash."""
        from jobsys.errors import JobsysError

        try:
            return await work
        except (JobsysError, OSError) as exc:
            self.note = f"refused: {exc}"
            self.draw()
            return None

    def _ask(
        self, text: str, then: Callable[[], Awaitable[Any]], done: str | Callable[[Any], str]
    ) -> None:
        """Ask ``text``; on ``y`` run ``then`` and note ``done`` (or what ``done`` makes
        of the result)."""

        async def action() -> Any:  # ``then()`` too under the guard: it loads the config
            return await then()

        async def answered(yes: bool | None) -> None:
            if not yes:
                self.note = "cancelled: nothing was changed"
            elif (result := await self._guard(action())) is not None:
                self.note = done(result) if callable(done) else done
            await self.reload()

        self.push_screen(ConfirmScreen(text), answered)

    async def action_retry(self) -> None:
        from jobsys.retry.service import RetryRequest
        from jobsys.retry.service import retry as retry_service

        pane, key = self.current()
        if key is None or pane not in ("failures", "issues"):
            return
        if pane == "failures" and await self._refused(int(key)):
            return
        request = (
            RetryRequest(ids=(int(key),)) if pane == "failures" else RetryRequest(issue=int(key))
        )

        async def retry(dry: bool) -> Any:  # the config is loaded under the guard
            config = config_of(self.settings, with_tasks=True)
            chosen = _dry(request) if dry else request
            return await retry_service(self.settings, config, chosen, confirm=None, progress=None)

        preview = await self._guard(retry(dry=True))
        if preview is None:
            return
        lines = [
            f"retry {'failure' if pane == 'failures' else 'the failures of issue'} {key}",
            "dry run:",
        ]
        lines += [f"  {reason}: {count}" for reason, count in preview.counts.items()]
        lines += [
            f"  failure {d.failure_id} (job {d.job_id}): {_verdict(d)}"
            for d in preview.decisions[:12]
        ]
        if pane == "issues":
            from jobsys.issues.service import open_outage_for

            outage = await self._guard(open_outage_for(self.settings, self._config, int(key)))
            if outage:
                lines.insert(
                    1,
                    f"warning: service {outage['service']!r} has an open outage "
                    f"(issue {outage['id']}): the jobs would likely fail again",
                )
        if not preview.would_retry:
            self.push_screen(TextScreen("\n".join([*lines, "", "nothing would be retried"])))
            return
        self._ask(
            "\n".join([*lines, "", f"retry {preview.would_retry} of {preview.matched}?"]),
            lambda: retry(dry=False),
            f"retried ({pane} {key})",
        )

    async def _refused(self, failure_id: int) -> bool:
        """A retry of the failure that the rules refuse, whatever else they read (what
        its detail says: ``rules.refusal_known``), is not offered: its box says why."""
        from jobsys.cli.failures import shown, text_view

        found = await self._guard(shown(self.settings, self._config, failure_id))
        if found is None:
            return True  # the refusal or error is in the note
        failure, _ = found
        if failure["would_retry"]:
            return False  # the dry run decides, and asks
        verdict = {"would_retry": text_view(failure)["would_retry"]}
        width = max(40, box_width(self.size.width))
        text = [f"retry failure {failure_id}: not offered", *detail_lines(verdict, width)]
        self.push_screen(TextScreen("\n".join(text)))
        return True

    def _issue_action(self, verb: str, call: Callable[[int], Awaitable[Any]], done: str) -> None:
        pane, key = self.current()
        if key is None or pane != "issues":
            return
        from jobsys.issues.service import change_note

        issue = self.row(pane, key) or {}
        self._ask(
            f"{verb} issue {key}: {issue.get('title', '')}?",
            lambda: call(int(key)),
            lambda result: change_note(result, done, title=False),  # or found it so already
        )

    def action_resolve(self) -> None:
        from jobsys.issues.service import resolve_issue

        self._issue_action(
            "resolve", lambda i: resolve_issue(self.settings, self._config, i), "resolved"
        )

    def action_mute(self) -> None:
        from jobsys.issues.service import mute_issue

        self._issue_action(
            f"mute ({MUTE_FOR})",
            lambda i: mute_issue(self.settings, self._config, i, MUTE_FOR),
            f"muted for {MUTE_FOR}",
        )

    def action_reopen(self) -> None:
        from jobsys.issues.service import reopen_issue

        self._issue_action(
            "reopen", lambda i: reopen_issue(self.settings, self._config, i), "reopened"
        )

    def action_pause(self) -> None:
        from jobsys.schedule.service import paused_note, set_paused

        pane, key = self.current()
        if key is None or pane not in ("schedule", "lanes"):
            return
        if pane == "lanes":
            self._pause_lane(self.row(pane, key) or {})
            return
        paused = bool((self.row(pane, key) or {}).get("paused"))
        verb = "resume" if paused else "pause"
        self._ask(
            f"{verb} schedule entry {key}?",
            lambda: set_paused(
                self.settings, config_of(self.settings, with_tasks=True), key, not paused
            ),
            paused_note,  # another operator may have done it meanwhile
        )

    def _pause_lane(self, lane: dict[str, Any]) -> None:
        """Pause a lane's queues for every worker (``jobsys queues pause``); a lane
        with any queue paused is resumed (all its queues)."""
        from jobsys.flow.service import set_paused

        target = lane.get("target")
        if not target:
            return
        paused = bool(lane.get("paused"))
        verb = "resume" if paused else "pause"
        what = f"{verb} {target} ({lane.get('queues')})"
        if paused:
            what += f", paused now: {lane['paused']}"
        self._ask(
            f"{what}? {'Workers start its jobs again' if paused else 'No worker starts its jobs'}"
            " within a second.",
            lambda: set_paused(self.settings, config_of(self.settings), target, paused=not paused),
            f"{target}: {verb}d",
        )

    def action_cancel(self) -> None:
        pane, key = self.current()
        if key is None or pane not in ("jobs", "pipelines"):
            return
        if pane == "jobs":
            from jobsys.jobs.browser import cancel_job

            self._ask(
                f"cancel job {key}? (a running job is asked to abort)",
                lambda: cancel_job(self.settings, config_of(self.settings), int(key)),
                f"job {key}: cancel asked",
            )
        else:
            from jobsys.pipelines.service import cancel_pipeline

            self._ask(
                f"cancel pipeline {key}?",
                lambda: cancel_pipeline(self.settings, config_of(self.settings), int(key)),
                f"pipeline {key}: cancelled",
            )


def _dry(request: Any) -> Any:
    import dataclasses

    return dataclasses.replace(request, dry_run=True)


def _verdict(decision: Any) -> str:
    if decision.decision == "retried":
        return "would be retried"
    return f"would be refused, {decision.decision}: {decision.detail}"


def run_app(settings: Settings) -> None:
    DashboardApp(settings).run()
