"""``jobsys db``: the database server (embedded or configured) and its schema."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import config, run, settings
from jobsys.cli._options import JsonOpt, YesOpt
from jobsys.cli._pipe import committed
from jobsys.errors import EXIT_FAILED

app = typer.Typer(help="Database: start/stop the embedded server, migrate, check the schema.")


@app.command()
def start(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Start the embedded PostgreSQL server (reused if already running)."""
    from jobsys.cli import _output
    from jobsys.db import service

    result = service.start(settings(ctx), lambda: config(ctx))
    _output.result(
        result,
        json=json,
        line=f"embedded PostgreSQL running (pid {result['pid']}) in {result['home']}",
    )


@app.command()
def stop(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Stop the embedded PostgreSQL server (a configured database is never touched)."""
    from jobsys.cli import _output
    from jobsys.db import service

    result = service.stop(settings(ctx), lambda: config(ctx))
    committed()
    if json:
        _output.emit_json(result)
    else:
        _output.say(
            "embedded PostgreSQL stopped" if result["was_running"] else "it was not running"
        )
    if result["configured_database"]:
        _output.say(
            f"note: this configuration uses {result['configured_database']}, "
            "not the embedded server; that database was not touched"
        )


@app.command()
def status(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Where the database is, whether it answers, and its schema revision."""
    from jobsys.cli import _output
    from jobsys.db import service

    result = run(service.status(settings(ctx), lambda: config(ctx)))
    if json:
        _output.emit_json(result)
    else:
        shown = {k: v for k, v in result.items() if k != "embedded"}
        _output.key_values(shown)
    if not result["reachable"]:
        if result["source"] == "embedded" and not result["embedded"]["running"]:
            _output.say("the embedded server is stopped: start it with `jobsys db start`")
        else:
            _output.say(
                "the database does not answer: is the server running and the URL right "
                "(--database-url, JOBSYS_DATABASE_URL or database.url in queues.yaml)?"
            )
        raise typer.Exit(EXIT_FAILED)


@app.command()
def url(ctx: typer.Context) -> None:
    """Print the database URL in use (password masked). Starts the embedded server."""
    from jobsys.cli import _output
    from jobsys.db import service

    _output.print_text(service.url(settings(ctx), lambda: config(ctx)))


@app.command()
def upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Target revision.")] = "head",
    json: JsonOpt = False,
) -> None:
    """Apply migrations (Procrastinate's schema, then jobsys's tables)."""
    from jobsys.cli import _output
    from jobsys.db import service

    result = service.upgrade(settings(ctx), lambda: config(ctx), revision)
    committed()
    if json:
        _output.emit_json(result)
    else:
        before = ", ".join(result["from"]) or "empty"
        after = ", ".join(result["to"]) or "empty"
        if before == after:
            _output.say(f"schema already up to date at {after} ({result['url']})")
        else:
            _output.say(f"schema {before} -> {after} ({result['url']})")


@app.command()
def downgrade(
    ctx: typer.Context,
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="Target revision, or 'base' for nothing.")
    ],
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Revert migrations down to REVISION (drops tables: asks first unless --yes)."""
    from jobsys.cli import _output
    from jobsys.db import migrate, service

    migrate.check_revision(revision)  # a typo is refused before any question
    if not yes:
        _output.confirm(
            f"Downgrade the schema of {service.url(settings(ctx), lambda: config(ctx))} to "
            f"{revision}? Data in dropped tables is lost"
        )
    result = service.downgrade(settings(ctx), lambda: config(ctx), revision)
    _output.result(
        result,
        json=json,
        line=f"schema {', '.join(result['from'])} -> {', '.join(result['to']) or 'empty'}",
    )


@app.command()
def current(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Print the schema revision of the database."""
    from jobsys.cli import _output
    from jobsys.db import service

    result = run(service.current(settings(ctx), lambda: config(ctx)))
    if json:
        _output.emit_json(result)
    else:
        _output.print_text(", ".join(result["revisions"]) or "(no schema)")
        if not result["up_to_date"]:
            _output.say(f"this jobsys expects {result['head']}: run `jobsys db upgrade`")
    if not result["up_to_date"]:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def check(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Fail (exit 1) when the database schema and the models drift apart."""
    from jobsys.cli import _output
    from jobsys.db import service

    result = service.check(settings(ctx), lambda: config(ctx))
    if json:
        _output.emit_json(result)
    elif result["in_sync"]:
        _output.say("schema in sync with the models")
    else:
        _output.say("schema drift:")
        for diff in result["differences"]:
            _output.print_text(diff)
    if not result["in_sync"]:
        raise typer.Exit(EXIT_FAILED)
