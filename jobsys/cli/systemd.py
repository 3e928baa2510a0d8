"""``jobsys systemd``: unit files to run the lanes as systemd services."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobsys.cli._context import config, settings
from jobsys.cli._options import JsonOpt

app = typer.Typer(help="systemd: unit files that run the lanes as services.")


@app.command()
def render(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the files into this folder (default: print them)."),
    ] = None,
    per_lane: Annotated[
        bool,
        typer.Option(
            "--per-lane", help="One unit per lane instead of the template jobsys-worker@.service."
        ),
    ] = False,
    exec_path: Annotated[
        str | None,
        typer.Option("--exec", help="Absolute path of jobsys in ExecStart. Default: this one."),
    ] = None,
    working_directory: Annotated[
        str | None,
        typer.Option("--working-directory", help="WorkingDirectory=. Default: the current one."),
    ] = None,
    environment_file: Annotated[
        str,
        typer.Option(
            "--environment-file", help="EnvironmentFile= (optional file: JOBSYS_DATABASE_URL...)."
        ),
    ] = "/etc/jobsys/jobsys.env",
    user: Annotated[str | None, typer.Option("--user", help="User= to run as.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Group= to run as.")] = None,
    json: JsonOpt = False,
) -> None:
    """Render systemd units for the lanes: a template jobsys-worker@.service (or one unit
    per lane) and jobsys.target."""
    from jobsys.cli import _output
    from jobsys.cli._pipe import committed
    from jobsys.lanes.systemd_files import render_units

    result = render_units(
        settings(ctx),
        config(ctx),
        out=out,
        per_lane=per_lane,
        exec_path=exec_path,
        working_directory=working_directory,
        environment_file=environment_file,
        user=user,
        group=group,
    )
    if out is not None:  # the unit files are written: a cut report must not say otherwise
        committed()
    for warning in result["warnings"]:
        _output.say(f"warning: {warning}")
    if json:
        _output.emit_json(result)
    elif out is None:
        for unit in result["units"]:
            _output.print_text(f"### {unit['name']}\n{unit['content']}")
    else:
        _output.unit_files_written(result)
