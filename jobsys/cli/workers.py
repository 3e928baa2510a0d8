"""``jobsys workers``: which hosts run which lanes, their heartbeats, what they run."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobsys.cli._context import run, settings

app = typer.Typer(
    help="Worker processes: host, pid, lanes, heartbeat, running jobs, state.",
    invoke_without_command=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
LIST_COLUMNS = (
    "id",
    "host",
    "pid",
    "state",
    ("lanes_text", "lanes (slots)"),
    ("started_at", "started (UTC)"),
    ("heartbeat_age_seconds", "beat s ago"),
    ("running_text", "running"),
)


def _lanes_text(worker: dict[str, Any]) -> str:
    slots = worker["concurrency"]
    return ", ".join(
        f"{lane}({slots[lane]})" if lane in slots else lane for lane in worker["lanes"]
    )


def _running_text(worker: dict[str, Any]) -> str:
    jobs = worker["running_jobs"]
    slots = worker["slots"]
    return f"{len(jobs)}/{slots}" if slots else str(len(jobs))


AllOpt = Annotated[
    bool, typer.Option("--all", help="Every process ever recorded, stopped ones too.")
]
StateOpt = Annotated[
    list[str] | None,
    typer.Option("--state", help="running, draining, fenced, dead or stopped; repeatable."),
]


@app.callback()
def workers(
    ctx: typer.Context, every: AllOpt = False, state: StateOpt = None, json: JsonOpt = False
) -> None:
    """Worker processes; `jobsys workers` alone is `jobsys workers list`."""
    if ctx.invoked_subcommand is None:
        list_(ctx, every=every, state=state, json=json)


@app.command("list")
def list_(
    ctx: typer.Context, every: AllOpt = False, state: StateOpt = None, json: JsonOpt = False
) -> None:
    """Live worker processes and those that ended in the last day, by host."""
    from jobsys.cli import _output
    from jobsys.lanes import workers as service

    rows = run(service.list_workers(settings(ctx), every=every, states=tuple(state or ())))
    if json:
        _output.emit_json(rows)
        return
    _output.table(
        [{**w, "lanes_text": _lanes_text(w), "running_text": _running_text(w)} for w in rows],
        LIST_COLUMNS,
        empty="no worker processes (start one with `jobsys worker`)",
    )


@app.command()
def show(
    ctx: typer.Context,
    worker_id: Annotated[
        str, typer.Argument(metavar="ID", help="Process id, or host:pid (a prefix of the id).")
    ],
    json: JsonOpt = False,
) -> None:
    """One worker process: lanes, heartbeat, running jobs, the failures it ran."""
    from jobsys.cli import _output
    from jobsys.lanes import workers as service

    worker = run(service.show_worker(settings(ctx), worker_id))
    if json:
        _output.emit_json(worker)
        return
    nested = ("running_jobs", "recent_failures", "concurrency", "lanes", "slots")
    summary = {k: v for k, v in worker.items() if k not in nested}
    summary["lanes"] = _lanes_text(worker)
    _output.key_values(summary, title=f"worker {worker['id']}")
    _output.table(
        worker["running_jobs"],
        ["id", "task", "queue", ("running_seconds", "running s"), "abort_requested"],
        title="running jobs",
        empty="running no job",
    )
    if worker["recent_failures"]:
        _output.table(
            worker["recent_failures"],
            ["id", "job_id", "task", "kind", "error_class", "message", "occurred_at"],
            title="failed attempts it ran (newest first)",
        )
