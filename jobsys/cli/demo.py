"""``jobsys demo``: the bundled demo application (DEMO ONLY: synthetic accounts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from jobsys.cli._context import config, config_of, jobsys_command, run, settings
from jobsys.cli._options import JsonOpt

app = typer.Typer(help="The bundled demo (synthetic accounts, simulated failures).")

AccountsOpt = Annotated[
    int, typer.Option("--accounts", min=1, max=1_000_000, help="Synthetic accounts.")
]


def banner(burst: dict[str, Any], jobsys: str) -> str:
    """What ``demo run`` says once the burst is deferred; ``jobsys`` is how to type the
    command in another terminal (``.venv/bin/jobsys`` when the venv is not active)."""
    text = (
        f"DEMO: {burst['accounts']} synthetic accounts; deferred "
        f"{sum(burst['deferred'].values())} demo jobs and story pipelines across every "
        f"lane. Watch with `{jobsys} dashboard`, `{jobsys} failures list` and "
        f"`{jobsys} issues list` in another terminal"
    )
    if jobsys != "jobsys":
        venv = str(Path(jobsys).parent / "activate")
        text += f" (or `source {venv}` first, then plain `jobsys ...`)"
    text += ". Every 2 minutes `demo.start_story_pipelines` starts more story pipelines and AI jobs"
    return text + ". Ctrl-C to stop."


@app.command()
def seed(
    ctx: typer.Context,
    accounts: AccountsOpt = 200,
    json: JsonOpt = False,
) -> None:
    """Create the demo's accounts table and top it up to --accounts rows (idempotent)."""
    from jobsys.cli import _output
    from jobsys.demo import run as demo

    result = run(demo.seed(settings(ctx), config(ctx), accounts))
    _output.result(result, json=json, line=f"demo_accounts: {result['accounts']} accounts")


@app.command("run")
def run_demo(
    ctx: typer.Context,
    accounts: AccountsOpt = 200,
    web: Annotated[
        str | None,
        typer.Option(
            "--web",
            metavar="HOST:PORT",
            help="Also serve the web console there (`make run`: 127.0.0.1:8080).",
        ),
    ] = None,
) -> None:
    """Simulate the AI service, seed, defer a burst on every lane, run all lanes (Ctrl-C)."""
    from jobsys.cli import _output
    from jobsys.cli._pipe import serving as serves
    from jobsys.demo import run as demo

    serves()  # its output is logs and notes: a reader going away never stops it
    serving = _start_web(ctx, web) if web else None

    def announce(burst: dict[str, Any]) -> None:
        _output.say(burst["ai_service"]["message"])
        _output.say(banner(burst, jobsys_command()))
        if serving is not None:
            _output.say(f"Web console: {serving.url}/admin/background_jobs")

    try:
        given = demo.with_demo(settings(ctx))
        result = run(
            demo.run(given, config_of(given, with_tasks=True), accounts, announce=announce)
        )
    finally:
        if serving is not None:
            serving.stop()
        _say_postgres_runs(ctx)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _say_postgres_runs(ctx: typer.Context) -> None:
    """After Ctrl-C: the workers stopped, the embedded PostgreSQL did not."""
    from jobsys.cli import _output
    from jobsys.db.service import embedded_left_running
    from jobsys.errors import JobsysError

    try:
        running = embedded_left_running(settings(ctx), lambda: config(ctx))
    except (JobsysError, OSError):  # a note, never a reason to fail the stop
        return
    if running:
        _output.say(
            "note: the embedded PostgreSQL server is still running (the data stays); "
            f"`{jobsys_command()} db stop` stops it"
        )


def _start_web(ctx: typer.Context, where: str) -> Any:
    """The console in a thread beside the demo; a port in use is a note, not a stop:
    the demo is worth watching in the terminal too."""
    from jobsys.cli import _output
    from jobsys.errors import JobsysError, UsageError
    from jobsys.web.server import prepare, run_in_thread

    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--web {where!r}: give HOST:PORT, e.g. 127.0.0.1:8080.")
    try:
        web_app, sock, _url = prepare(settings(ctx), host, int(port))
    except JobsysError as exc:
        _output.say(f"note: web console not started: {exc}")
        return None
    return run_in_thread(web_app, sock)
