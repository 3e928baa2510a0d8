"""``jobsys config``: validate and show ``queues.yaml`` and ``schedule.yaml``."""

from __future__ import annotations

from typing import Any

import typer

from jobsys.cli._context import settings
from jobsys.cli._options import JsonOpt
from jobsys.errors import ConfigError

app = typer.Typer(help="Configuration: validate and show queues.yaml and schedule.yaml.")


def summary(config: Any) -> dict[str, Any]:
    from jobsys import tasks

    return {
        "ok": True,
        "directory": str(config.directory),
        "lanes": [
            {"lane": lane.name, "queues": list(lane.queues), "concurrency": lane.concurrency}
            for lane in config.lanes.values()
        ],
        "schedule_entries": sorted(config.schedule.entries),
        "tasks": sorted(tasks.registry()),
        "problems": [],
    }


@app.command()
def check(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Validate both files and the tasks they name; print every problem at once (exit 2)."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.cli.schedule import sources_note
    from jobsys.config.application import load_config, schedule_args_problems
    from jobsys.schedule.service import config_source_check

    try:
        config = load_config(settings(ctx))
        args_problems = schedule_args_problems(config)
        # Fan-out sources need the database; checked when it answers, skipped otherwise.
        source_problems, source_warnings, sources_checked = run(
            config_source_check(settings(ctx), config)
        )
        if args_problems or source_problems:
            raise ConfigError([*args_problems, *source_problems])
    except ConfigError as exc:
        _output.problems_found(exc, json=json)
        raise typer.Exit(exc.exit_code) from None
    result = summary(config)
    result["fanout_sources_checked"] = sources_checked
    result["warnings"] = source_warnings
    if json:
        _output.emit_json(result)
    else:
        for line in source_warnings:
            _output.say(f"warning: {line}")
        queues = sum(len(lane["queues"]) for lane in result["lanes"])
        _output.say(
            f"configuration OK: {len(result['lanes'])} lanes, {queues} queues, "
            f"{len(result['schedule_entries'])} schedule entries, {len(result['tasks'])} tasks"
            + sources_note(sources_checked)
        )


@app.command()
def show(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Print the effective configuration, defaults included: the database in use (password
    masked) and where it comes from, each lane's queues."""
    from jobsys.cli import _output
    from jobsys.config.application import effective_config

    data = effective_config(settings(ctx))
    if json:
        _output.emit_json(data)
    else:
        import yaml

        _output.print_text(yaml.safe_dump(data, sort_keys=False))
