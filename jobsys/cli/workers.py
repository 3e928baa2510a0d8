"""``jobsys workers``: which hosts run which lanes, their heartbeats, what they run."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import typer

from jobsys.cli._context import config, run, settings
from jobsys.cli._options import JsonOpt, Listing, WideOpt, listing_commands
from jobsys.cli._table import Col

app = typer.Typer(
    help="Worker processes: host, pid, lanes, heartbeat, running jobs, state.",
    invoke_without_command=True,
)

LIST_COLUMNS = (
    Col("host", priority=0),
    Col("pid", kind="id", priority=0),
    Col("state", priority=0),
    Col("running_text", "running", kind="number", priority=1),
    Col("heartbeat_age_seconds", "beat", kind="duration", priority=1),
    Col("lanes_text", "lanes (slots)", kind="text", priority=2, min=16),
    Col("started_at", "started", kind="time", priority=3),
    Col("id", wide_only=True),
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


def listing_options(
    every: AllOpt = False, state: StateOpt = None, wide: WideOpt = False, json: JsonOpt = False
) -> Listing:
    """The options of ``jobsys workers`` and ``jobsys workers list``: the listing asked for."""
    return functools.partial(
        list_workers, every=every, states=tuple(state or ()), wide=wide, json=json
    )


def list_workers(
    ctx: typer.Context, *, every: bool, states: tuple[str, ...], wide: bool, json: bool
) -> None:
    from jobsys.cli import _output
    from jobsys.lanes import workers as service

    rows = run(service.list_workers(settings(ctx), config(ctx), every=every, states=states))
    if json:
        _output.emit_list(rows)
        return
    _output.table(
        [{**w, "lanes_text": _lanes_text(w), "running_text": _running_text(w)} for w in rows],
        LIST_COLUMNS,
        empty=service.none_in_state(every, states)
        or "no worker processes (start one with `jobsys worker`)",
        wide=wide,
    )


listing_commands(
    app,
    listing_options,
    help="""Live worker processes and those that ended in the last day, by host;
    `jobsys workers` alone is `jobsys workers list`.""",
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

    worker = run(service.show_worker(settings(ctx), config(ctx), worker_id))
    if json:
        _output.emit_json(worker)
        return
    nested = ("running_jobs", "recent_failures", "concurrency", "lanes", "slots")
    summary = {k: v for k, v in worker.items() if k not in nested}
    summary["lanes"] = _lanes_text(worker)
    _output.key_values(summary, title=f"worker {worker['id']}")
    _output.table(
        worker["running_jobs"],
        [
            Col("id", kind="id", priority=0),
            Col("task", priority=0),
            Col("queue", priority=2),
            Col("running_seconds", "running", kind="duration", priority=1),
            Col("abort_requested", priority=3),
        ],
        title="running jobs",
        empty="running no job",
        wide=None,
    )
    if worker["recent_failures"]:
        _output.table(
            worker["recent_failures"],
            ["id", "job_id", "task", "kind", "error_class", "message", "occurred_at"],
            title="failed attempts it ran (newest first)",
            wide=None,
        )
