"""The output layer: the only module that imports Rich.

``--json`` is a contract: exactly one JSON document on stdout (snake_case keys,
ISO-8601 UTC times, no markup); human chatter goes to stderr. Tables by default;
no colour when piped or when ``NO_COLOR`` is set (Rich honours both).

Piped output is not squeezed to a terminal's width: a console that is not a terminal
is ``COLUMNS`` wide (``PIPED_WIDTH`` when unset), and a table that still needs more
room to keep every word whole gets it (``jobsys queues | cat`` never shows
``concurr/ency``), and a message or a ``key  value`` row is one line, whatever its
length. On a terminal, text that is longer than the terminal is wide is folded here, at
spaces (:func:`fold`), so the terminal never breaks a word (``aga/in``): a message's
continuation lines are indented by two, a ``show`` row's go under its value column.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from jobsys.clock import utc

if TYPE_CHECKING:
    from jobsys.errors import ConfigError

#: Width of output that does not go to a terminal and has no ``COLUMNS`` (characters).
PIPED_WIDTH = 200
#: Indent of a folded message's continuation lines (characters).
HANGING_INDENT = 2
#: Room a folded line keeps for its text: a deeper indent falls back to HANGING_INDENT.
MIN_FOLDED_TEXT = 30

_WORDS = re.compile(r"\S+|\s+")

_stdout: Any = None
_stderr: Any = None


def piped_width() -> int:
    """``COLUMNS`` when set to a number, else :data:`PIPED_WIDTH`."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPED_WIDTH


def on_terminal(console: Any) -> bool:
    """Whether ``console`` writes to a real terminal: what fitting tables, folding text
    and progress bars follow. Rich's ``is_terminal`` also says yes when FORCE_COLOR or
    TTY_COMPATIBLE is set, which ask for colour in a CI log, not for piped lines cut to
    a width."""
    isatty = getattr(console.file, "isatty", None)
    return bool(console.is_terminal and isatty is not None and isatty())


def _console(file: Any) -> Any:
    from rich.console import Console

    console = Console(file=file, highlight=False, soft_wrap=False)
    if not on_terminal(console):
        # Rich would take the width of whichever standard stream is a terminal (stderr,
        # say, while stdout is piped), or 80: both squeeze piped tables.
        console.width = piped_width()
    return console


def stdout_console() -> Any:
    global _stdout
    if _stdout is None or _stdout.file is not sys.stdout:
        _stdout = _console(sys.stdout)
    return _stdout


def stderr_console() -> Any:
    global _stderr
    if _stderr is None or _stderr.file is not sys.stderr:
        _stderr = _console(sys.stderr)
    return _stderr


def fold(text: str, width: int | None, indent: int | None = None) -> str:
    """``text`` with each line longer than ``width`` cells broken at spaces, its
    continuation lines indented by ``indent`` (default: the line's own indent plus
    :data:`HANGING_INDENT`). A word longer than a line is left whole. ``width`` None
    (not a terminal): ``text`` unchanged."""
    if width is None:
        return text
    from rich.cells import cell_len

    folded: list[str] = []
    for line in text.split("\n"):
        if cell_len(line) <= width:
            folded.append(line)
            continue
        lead = len(line) - len(line.lstrip(" "))
        hang = lead + HANGING_INDENT if indent is None else indent
        if width - hang < MIN_FOLDED_TEXT:
            hang = min(hang, HANGING_INDENT)
        current, used, space = line[:lead], lead, ""
        for token in _WORDS.findall(line[lead:]):
            if token.isspace():
                space = token
                continue
            size = cell_len(token)
            if used + len(space) + size <= width or not current.strip():
                current += space + token
                used += len(space) + size
            else:
                folded.append(current)
                current, used = " " * hang + token, hang + size
            space = ""
        folded.append(current)
    return "\n".join(folded)


def fits_terminal(*, wide: bool) -> bool:
    """Whether a table on stdout is fitted to a terminal (not ``--wide``, not piped)."""
    return not wide and on_terminal(stdout_console())


def terminal_width(console: Any) -> int | None:
    """The width text on ``console`` is folded to: its width on a terminal, else None."""
    return int(console.width) if on_terminal(console) else None


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return utc(value).isoformat().replace("+00:00", "Z")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (Path, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False, allow_nan=False)


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(to_json(data) + "\n")
    sys.stdout.flush()


def list_document(
    items: Iterable[Any],
    *,
    total: int | None = None,
    limit: int | None = None,
    notes: Iterable[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The one envelope of every list: ``{"items", "count", "total", "notes", ...}``.

    ``total`` is how many match in all; when the caller did not count them, a list
    shorter than its ``limit`` is complete (total = count), and a full page's total is
    unknown (None, and a note says so)."""
    items = list(items)
    notes = list(notes)
    if total is None and (limit is None or len(items) < limit):
        total = len(items)
    if total is None and limit is not None:
        notes.append(f"total not counted: at least {len(items)} match (--limit {limit})")
    return {"items": items, "count": len(items), "total": total, "notes": notes, **extra}


def emit_list(items: Iterable[Any], **kwargs: Any) -> None:
    """A list as one JSON document on stdout, in :func:`list_document`'s envelope."""
    emit_json(list_document(items, **kwargs))


def result(data: Any, *, json: bool, line: str) -> None:
    """An action's outcome, once the action is done (committed): with ``json`` its
    result as one document on stdout, else ``line`` for a human (stderr)."""
    from jobsys.cli._pipe import committed

    committed()
    if json:
        emit_json(data)
    else:
        say(line)


def rows_or_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Any],
    *,
    json: bool,
    wide: bool,
    empty: str,
    limit: int | None = None,
    notes: Sequence[str] = (),
) -> None:
    """A list command's output: with ``json`` the rows in the list envelope (``limit``:
    the page size asked for), else the table; each of ``notes`` said on stderr first
    (and in the envelope's ``notes``)."""
    for note in notes:
        say(f"note: {note}")
    if json:
        emit_list(rows, limit=limit, notes=notes)
    else:
        table(rows, columns, empty=empty, wide=wide)


def problems_found(exc: ConfigError, *, json: bool) -> None:
    """A check that failed (``config check``, ``schedule check``): every problem, one a
    line, and how many on stderr, then what to do (its hint) unless it is to run
    ``config check`` (``exc.runs_check``); with ``json``, one document
    ``{ok: false, problems}``."""
    if json:
        emit_json({"ok": False, "problems": exc.problems})
        return
    for problem in exc.problems:
        line(problem)
    say(f"{len(exc.problems)} problem(s) found")
    if exc.hint and not exc.runs_check:
        say(exc.hint)


def emit_json_line(data: Any) -> None:
    """One JSON object per line (streams such as ``jobsys events --json``)."""
    sys.stdout.write(to_json(data) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """Human chatter: stderr, so stdout stays clean for data (folded on a terminal)."""
    _say_on(stderr_console(), message)


def _say_on(console: Any, message: str) -> None:
    """One message on ``console``: folded at spaces on a terminal, whole when piped."""
    console.print(
        fold(message, terminal_width(console)), markup=False, highlight=False, soft_wrap=True
    )


def line(text: str) -> None:
    """One line of human text on stdout: folded at spaces on a terminal (see
    :func:`fold`), whole when piped. Data (YAML, ids, unit files) goes through
    :func:`print_text`, which never folds."""
    print_text(fold(text, terminal_width(stdout_console())))


def confirm(question: str) -> None:
    """The one confirmation of every destructive command (``--yes`` skips it): ask
    ``question`` on stderr, default no, and return only on a yes read from stdin.

    Anything else, or end of input (``</dev/null``, cron), is refused: "not confirmed;
    nothing was changed." with the ``--yes`` hint, exit 2. The first Ctrl-C ends the
    command, exit 130 (see :func:`_sigint_interrupts`). A command with nothing to act
    on says so and does not ask. Not ``typer.confirm(err=True)``: that still writes
    the space after the prompt to stdout, and stdout is for data only."""
    from jobsys.errors import RefusedError

    with _sigint_interrupts():
        sys.stderr.write(f"{question} [y/N]: ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
    if not answer.endswith("\n") or not sys.stdin.isatty():
        sys.stderr.write("\n")  # a terminal echoed the answer's newline; nothing else did
    if answer.strip().lower() not in ("y", "yes"):
        raise RefusedError(
            "not confirmed; nothing was changed.", hint="Pass --yes to confirm without a prompt."
        )


@contextlib.contextmanager
def _sigint_interrupts() -> Iterator[None]:
    """Within: Ctrl-C raises KeyboardInterrupt, even inside ``asyncio.run``.

    The services ask from within their coroutine, where asyncio's SIGINT handler only
    cancels the task; a blocking read never notices, and the prompt would wait for a
    second Ctrl-C. Python sets handlers in the main thread only; an ignored SIGINT
    stays ignored."""
    import signal
    import threading

    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write("\n")  # end the line of the prompt and its ^C
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def format_cell(value: Any, now: datetime | None = None) -> str:
    """One value of a ``show`` for a human; times as ``2026-12-05 19:13:00 UTC (3m ago)``."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        from jobsys.cli._table import human

        return human(value, now or datetime.now(UTC))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict):
        # an object for a human: "signal: down, value: 0, threshold: 0", not raw JSON
        parts = [
            f"{k}: " + (to_json(v) if isinstance(v, (dict, list)) else format_cell(v, now))
            for k, v in value.items()
        ]
        return ", ".join(parts) or "-"
    if isinstance(value, list):
        return to_json(value)
    return str(value)


def _as_col(spec: Any) -> Any:
    """A ``Col``, or a key / (key, header) pair: kind guessed from the key's name."""
    from jobsys.cli._table import Col

    if isinstance(spec, Col):
        return spec
    key, header = (spec, "") if isinstance(spec, str) else spec
    if key.endswith("_at") or key in ("first_seen", "last_seen", "at"):
        return Col(key, header, kind="time")
    if key == "id" or key.endswith("_id"):
        return Col(key, header, kind="id")
    return Col(key, header)


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Any],
    *,
    title: str | None = None,
    empty: str = "nothing to show",
    wide: bool | None = False,
    to_stderr: bool = False,
) -> None:
    """Render rows as a table on stdout (stderr with ``to_stderr``), one line per row
    (see ``_table``).

    ``wide`` None: a table inside a ``show`` or a report (fitted, absolute times, no
    --wide hint).

    ``columns`` are ``_table.Col`` objects, keys or (key, header) pairs. On a terminal
    the table fits its width (least important columns give way, long text ends in an
    ellipsis, times relative); with ``wide`` or when piped, complete values."""
    from rich.text import Text

    from jobsys.cli._table import layout

    rows = list(rows)
    if not rows:
        say(empty)
        return
    console = stderr_console() if to_stderr else stdout_console()
    width = int(console.width) if on_terminal(console) else None
    shown = layout(
        rows,
        [_as_col(c) for c in columns],
        width=width,
        wide=bool(wide),
        absolute_times=True if wide is None else None,
    )
    if title:
        console.print(Text(title, style="bold"), no_wrap=True, overflow="ellipsis")
    if on_terminal(console) and not wide:
        console.print(Text(shown.header, style="bold"), no_wrap=True, overflow="crop")
        for line in shown.lines:
            console.print(Text(line), no_wrap=True, overflow="crop")
    else:  # piped, or --wide: whole lines (a terminal folds the wide ones)
        stream = sys.stderr if to_stderr else sys.stdout
        stream.write("\n".join((shown.header, *shown.lines)) + "\n")
    if shown.dropped and on_terminal(console) and wide is not None:
        from jobsys.cli._table import clip

        names = ", ".join(shown.dropped)
        say(clip(f"(--wide for {len(shown.dropped)} more: {names})", int(console.width)))


def key_values(data: Mapping[str, Any], *, title: str | None = None) -> None:
    """Render one object as aligned ``key  value`` lines on stdout: plain lines, no
    padding after the value. On a terminal a long value is folded at spaces, its
    continuation lines under the value column; piped, each row is one line."""
    now = datetime.now(UTC)
    width = max((len(key) for key in data), default=0)
    terminal = terminal_width(stdout_console())
    lines = [title] if title else []
    for key, value in data.items():
        text = format_cell(value, now)
        if terminal is not None:  # a value's own lines go under the value column too
            text = text.replace("\n", "\n" + " " * (width + 2))
        row = f"{key.replace('_', ' '):<{width}}  {text}".rstrip()
        lines.append(fold(row, terminal, indent=width + 2))
    print_text("\n".join(lines))


def error(message: str, hint: str | None = None) -> None:
    console = stderr_console()
    width = terminal_width(console)
    console.print(
        fold(f"error: {message}", width), markup=False, style="red", highlight=False, soft_wrap=True
    )
    if hint:
        _say_on(console, hint)


def unit_files_written(result: Mapping[str, Any]) -> None:
    """Chatter of ``jobsys systemd render --out``: what was written, what to run next."""
    lines = [f"{'wrote' if u['changed'] else 'unchanged'} {u['path']}" for u in result["units"]]
    lines += [
        f"note: {result['out']}/{name} is from an earlier render: remove it, or the "
        "install below copies it too"
        for name in result["leftovers"]
    ]
    env = result["environment_file"]
    lines += [
        "install:",
        # touch, not `install /dev/null`: a re-deploy must not empty the file it holds.
        f"  sudo install -d {PurePosixPath(env).parent} && sudo touch {env} && sudo chmod 600 {env}"
        "   # then set JOBSYS_DATABASE_URL=postgresql://... in it",
        f"  sudo cp {result['out']}/jobsys* /etc/systemd/system/ && sudo systemctl daemon-reload",
        f"  sudo systemctl enable --now {' '.join(result['enable'])}",
        "  (or every lane on this host: sudo systemctl enable --now jobsys.target)",
    ]
    for line in lines:  # one line each, never wrapped: they are meant for copy and paste
        stderr_console().print(line, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields ``update(done, total)``. Silent when not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    if not on_terminal(console):
        yield lambda done, total: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task_ids: list[Any] = []

    def update(done: int, total: int) -> None:
        # Drawn on the first real progress only: a refused request or a lone id never
        # shows an empty "0/?" bar.
        if not task_ids:
            if total <= 1:
                return
            bar.start()
            task_ids.append(bar.add_task(description, total=total))
        bar.update(task_ids[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task_ids:
            bar.stop()


def retry_verdicts(report: Any) -> None:
    """One line per failure: its verdict and why (``jobsys retry ID...``).

    A dry run says so on every line ("would be retried") and in the count."""
    for d in report.decisions:
        if report.dry_run:
            verdict = f"failure {d.failure_id} (job {d.job_id}): would be " + (
                "retried" if d.decision == "retried" else f"refused, {d.decision}: {d.detail}"
            )
        else:
            verdict = f"failure {d.failure_id} (job {d.job_id}): {d.decision}"
            verdict = verdict if d.decision == "retried" else f"{verdict}: {d.detail}"
        line(verdict)
    if report.dry_run:
        say(
            f"dry run: {report.would_retry} would be retried, {report.refused} would be refused; "
            "nothing was changed"
        )
    else:
        say(f"{report.retried} retried, {report.refused} refused (batch {report.batch_id})")


def retry_already_done(retried: int, already: int, superseded: int, actors: Sequence[str]) -> None:
    """A bulk retry that found (some of) its work done already: say so."""
    done = []
    if already:
        who = ", ".join(actors) if actors else "someone"
        noun = "failure was" if already == 1 else "failures were"
        done.append(f"{already} {noun} already retried (by {who})")
    if superseded:
        noun = "failure" if superseded == 1 else "failures"
        done.append(f"{superseded} {noun} superseded by a newer failure of its job")
    if retried:
        say(f"{retried} retried now; {', '.join(done)}")
    else:
        say(f"already done: {', '.join(done)}; nothing left to retry")


def retry_summary(report: Any, *, to_stderr: bool = False) -> None:
    """Counts per reason and a sample of the verdicts, with failure ids (bulk retry).

    The heading is a line of its own, not the table's title: Rich wraps a title to
    the width of this narrow table."""
    console = stderr_console() if to_stderr else stdout_console()
    from jobsys.cli._table import Col

    noun = "failure" if report.matched == 1 else "failures"
    heading = f"{report.matched} {noun} matched"
    if report.dry_run:
        heading += "; dry run, nothing was changed"
    _say_on(console, heading)
    table(
        [{"decision": reason, "failures": count} for reason, count in report.counts.items()],
        [Col("decision", priority=0), Col("failures", kind="number", priority=0)],
        wide=None,
        to_stderr=to_stderr,
    )
    sample = report.sample()
    if sample:
        title = "sample:" if report.dry_run else "sample of refused:"
        _say_on(console, title)
        for d in sample:
            if not report.dry_run:
                verdict = f"{d.decision}: {d.detail}"
            elif d.decision == "retried":
                verdict = "would be retried"
            else:
                verdict = f"would be refused, {d.decision}: {d.detail}"
            _say_on(console, f"  failure {d.failure_id} (job {d.job_id}): {verdict}")


#: Filters whose option is not ``--`` and their key (``queues``: ``--queue``, repeated).
_FILTER_OPTIONS = {"queues": "--queue", "statuses": "--status", "args": "--arg"}


def as_options(filters: Mapping[str, Any]) -> str:
    """Filters as the operator types them: ``--queue sync --arg account_id=8812``
    (``none`` when there are none)."""
    import shlex

    typed = []
    for key, value in filters.items():
        option = _FILTER_OPTIONS.get(key, "--" + key.replace("_", "-"))
        if value is True:
            typed.append(option)
            continue
        for item in value if isinstance(value, (list, tuple)) else (value,):
            typed.append(f"{option} {shlex.quote(str(item))}")
    return " ".join(typed) or "none"


def bulk_verb(report: Mapping[str, Any]) -> str:
    return "delete" if report["action"] == "jobs_delete" else "cancel"


def bulk_report(report: Mapping[str, Any], *, to_stderr: bool = False) -> None:
    """A bulk action (``jobs cancel --all``, ``jobs delete --all``, ``queues purge``):
    what matched, per kind, a sample, and what was done (or, dry run, would be)."""
    console = stderr_console() if to_stderr else stdout_console()
    from jobsys.cli import _table

    def line(text: str) -> None:
        _say_on(console, text)

    verb = bulk_verb(report)
    line(f"{report['total']} jobs to {verb} (filters: {as_options(report['filters'])})")
    if report["matched"]:
        table(
            [{"matched": kind, "jobs": count} for kind, count in sorted(report["matched"].items())],
            [_table.Col("matched", priority=0), _table.Col("jobs", kind="number", priority=0)],
            wide=None,
            to_stderr=to_stderr,
        )
    running = report["matched"].get("running", 0)
    if running and verb == "cancel" and not report["filters"].get("abort_running"):
        line(f"{running} running jobs are left alone (--abort-running asks them to abort)")
    if report["sample"]:
        line("sample:")
        for job in report["sample"]:
            line(
                f"  job {job['id']} {job['status']} {job['queue']} {job['task']} "
                f"{_table.clip(to_json(job['args']), 80)}"
            )
    if report["dry_run"]:
        line("dry run: nothing was changed")
    elif report["total"] == 0:
        line(f"nothing to {verb}; nothing was changed")
    elif report["audit_id"] is not None:
        done = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report["done"].items())
        line(f"done: {done} (audit row {report['audit_id']})")


# --- Live operations: events and the dashboard --------------------------------------


def event_line(at: datetime, topic: str, data: Mapping[str, Any]) -> None:
    """One event as a human line: time, topic, then the key=value pairs that are set."""
    fields = " ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in data.items()
        if v is not None
    )
    sys.stdout.write(f"{(iso(at) or '')[11:23]} {topic:<26} {fields}".rstrip() + "\n")
    sys.stdout.flush()


def terminal_size() -> tuple[int, int]:
    """(columns, lines) of the terminal stdout is on (80x24 when unknown)."""
    width, height = stdout_console().size
    return int(width), int(height)


@contextlib.contextmanager
def live_screen() -> Iterator[Callable[[list[str]], None]]:
    """A full-screen view (alternate screen, cursor hidden, restored on exit);
    yields ``update(lines)`` that replaces what is shown."""
    from rich.live import Live
    from rich.text import Text

    console = stdout_console()
    with Live(
        console=console,
        screen=True,
        auto_refresh=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:

        def update(lines: list[str]) -> None:
            live.update(Text("\n".join(lines), no_wrap=True, overflow="crop"), refresh=True)

        yield update
