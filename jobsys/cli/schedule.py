"""``jobsys schedule``: the recurring schedule: list, run now, pause, resume, check."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import config, run, settings
from jobsys.cli._options import JsonOpt, WideOpt
from jobsys.cli._table import Col

app = typer.Typer(help="Schedule: list entries, run one now, pause/resume, check schedule.yaml.")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The entry's name in schedule.yaml.")]

LIST_COLUMNS = (
    Col("name", priority=0),
    Col("cron", priority=1),
    Col("next_run_at", "next run", kind="time", priority=0),
    Col("last_run_at", "last run", kind="time", priority=2),
    Col("last_status", "last", priority=2),
    Col("paused", priority=1),
    Col("task", priority=3),
    Col("queue", priority=4),
    Col("timezone", priority=5),
    Col("fanout", wide_only=True),
    Col("missed", kind="number", wide_only=True),
    Col("description", kind="text", wide_only=True),
)


@app.command("list")
def list_(ctx: typer.Context, wide: WideOpt = False, json: JsonOpt = False) -> None:
    """Every entry: cron, task, queue, next run, last run and its outcome, paused."""
    from jobsys.cli import _output
    from jobsys.schedule import service

    rows = run(service.list_entries(settings(ctx), config(ctx, with_tasks=True)))
    if json:
        _output.emit_list(rows)
    else:
        _output.table(rows, LIST_COLUMNS, empty="no schedule entries", wide=wide)
        for row in rows:
            if row["problem"]:
                _output.say(f"warning: {row['name']}: {row['problem']}")


@app.command("run")
def run_(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Enqueue NAME now, once (recorded as a manual tick); print the job id, or for
    a fan-out its run id (`jobsys fanout show RUN`), on stdout. A fan-out follows the
    entry's overlap policy: while its previous run is still going the run is skipped
    (exit 2) or, with `overlap: queue`, queued."""
    from jobsys.cli import _output
    from jobsys.cli._pipe import committed
    from jobsys.errors import EXIT_USAGE
    from jobsys.schedule import service

    result = run(service.run_entry(settings(ctx), config(ctx, with_tasks=True), name))
    if result["status"] != "skipped":
        committed()
    if json:
        _output.emit_json(result)
    if result["status"] == "skipped":
        # A refusal (exit 2, as every refused operation): nothing was enqueued.
        blocker = result["blocked_by"]
        why = (
            "has enqueued its items but some are still waiting or running"
            if result["blocked_by_items_pending"]
            else "is still in progress"
        )
        _output.error(
            f"{name}: not started: fan-out run {blocker} {why} (overlap: {result['overlap']}).",
            f"Follow it with `jobsys fanout show {blocker}`; run this again once it is done.",
        )
        raise typer.Exit(EXIT_USAGE)
    if json:
        return
    if result["run_id"] is not None:
        _output.print_text(str(result["run_id"]))
        behind = f" behind run {result['blocked_by']}" if result["status"] == "queued" else ""
        _output.say(
            f"{name}: fan-out run {result['run_id']} {result['run_status']}{behind} "
            f"(batch job {result['job_id'] if result['job_id'] is not None else '-'}); "
            f"follow it with `jobsys fanout show {result['run_id']}`"
        )
    else:
        _output.print_text(str(result["job_id"]))
        if result["status"] == "already_queued":
            _output.say(f"{name}: already queued as job {result['job_id']}; nothing was enqueued")
        else:
            _output.say(f"{name}: job {result['job_id']} enqueued on {result['queue']}")


@app.command()
def pause(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Pause NAME for every scheduler until `jobsys schedule resume NAME`."""
    _set_paused(ctx, name, True, json)


@app.command()
def resume(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Resume NAME from its next tick (ticks while paused are not caught up)."""
    _set_paused(ctx, name, False, json)


def _set_paused(ctx: typer.Context, name: str, paused: bool, json: bool) -> None:
    from jobsys.cli import _output
    from jobsys.schedule import service

    result = run(service.set_paused(settings(ctx), config(ctx, with_tasks=True), name, paused))
    _output.result(result, json=json, line=service.paused_note(result))


def sources_note(checked: bool) -> str:
    """What an OK line adds when the fan-out sources could not be checked."""
    return "" if checked else " (database unreachable: fan-out sources not checked)"


@app.command()
def check(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Validate schedule.yaml (cron, timezones, tasks, queues, fan-out sources); exit 2."""
    from jobsys.cli import _output
    from jobsys.errors import ConfigError
    from jobsys.schedule import service

    try:
        result = run(service.check(settings(ctx), config(ctx, with_tasks=True)))
    except ConfigError as exc:
        _output.problems_found(exc, json=json)
        raise typer.Exit(exc.exit_code) from None
    if json:
        _output.emit_json(result)
    else:
        for line in result["warnings"]:
            _output.say(f"warning: {line}")
        _output.say(
            f"schedule OK: {len(result['entries'])} entries"
            + sources_note(result["fanout_sources_checked"])
        )
