"""``jobsys dashboard`` (alias ``jobsys top``): the live operator screen, or one snapshot."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from jobsys.cli._context import checked_config, settings
from jobsys.errors import UsageError

#: Why the dashboard runs while the application's tasks are broken.
_NEEDS = "the dashboard reads the database only"


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Keys arrive one by one (q quits); the terminal is restored whatever happens."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _live(dash: Any) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, dash.quit)
    loop.add_signal_handler(signal.SIGWINCH, dash.poke)
    stdin = sys.stdin.fileno() if sys.stdin.isatty() else None

    def on_key() -> None:
        assert stdin is not None
        data = os.read(stdin, 64)
        if not data or b"q" in data.lower() or b"\x03" in data:
            dash.quit()
        else:
            dash.poke()  # any other key: redraw now

    with _cbreak(stdin) if stdin is not None else contextlib.nullcontext():
        if stdin is not None:
            loop.add_reader(stdin, on_key)
        try:
            await dash.run()
        finally:
            if stdin is not None:
                loop.remove_reader(stdin)


#: Terminal types the full-screen view cannot drive (no cursor addressing).
PLAIN_TERMS = ("", "dumb", "unknown")
PLAIN_REDRAWS_PER_SECOND = 0.5  # the plain view prints the whole screen each time


def plain_terminal() -> bool:
    """True when TERM names no terminal the live screen can drive (or is unset)."""
    return os.environ.get("TERM", "").strip().lower() in PLAIN_TERMS


def dashboard(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot and exit (also when not a TTY).")
    ] = False,
    json: Annotated[
        bool, typer.Option("--json", help="With --once: the snapshot as JSON.")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", help="The read-only live screen (a wallboard): no panes, no actions."
        ),
    ] = False,
) -> None:
    """Lanes, failures, issues, schedule, workers, pipelines and jobs: select a row,
    open it (enter), act on it after a confirmation; ? lists the keys, q quits."""
    from jobsys.cli import _dashboard_view, _output
    from jobsys.cli._context import run
    from jobsys.live.dashboard import Dashboard, snapshot_once

    if json and not once and sys.stdout.isatty():
        raise UsageError("--json needs --once (the live view is for terminals)")
    if once or json or not sys.stdout.isatty():
        snapshot = run(snapshot_once(settings(ctx), checked_config(ctx, needs=_NEEDS)))
        if json:
            _output.emit_json(snapshot)
        else:
            width, _ = _output.terminal_size()
            _output.print_text("\n".join(_dashboard_view.render(snapshot, width, None)))
        return

    if plain_terminal():
        term = os.environ.get("TERM") or "unset"
        _output.say(
            f"TERM={term}: this terminal cannot show the live screen; printing the "
            "dashboard again on each change instead (q or Ctrl-C quits)"
        )

        def print_plain(snapshot: dict[str, Any] | None, status: str) -> None:
            if snapshot is None and not status:
                return
            width, _ = _output.terminal_size()
            _output.print_text("\n".join(_dashboard_view.render(snapshot, width, None, status)))
            sys.stdout.flush()

        engine = Dashboard(
            settings(ctx),
            checked_config(ctx, needs=_NEEDS),
            print_plain,
            max_redraws_per_second=PLAIN_REDRAWS_PER_SECOND,
        )
        run(_live(engine))
        return

    if not watch:
        from jobsys.cli._tui import run_app

        run_app(settings(ctx))
        return

    with _output.live_screen() as update:

        def draw(snapshot: dict[str, Any] | None, status: str) -> None:
            width, height = _output.terminal_size()
            update(_dashboard_view.render(snapshot, width, height, status))

        run(_live(Dashboard(settings(ctx), checked_config(ctx, needs=_NEEDS), draw)))
