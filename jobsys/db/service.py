"""Operator-level database operations behind ``jobsys db ...``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobsys.db import embedded, migrate
from jobsys.db.connect import Target, resolve
from jobsys.db.schema import HEAD_REVISION
from jobsys.errors import DatabaseUnavailable, SchemaError, UsageError
from jobsys.settings import Settings

if TYPE_CHECKING:
    from jobsys.config import Config

#: The edge's configuration loader: asked only when the files may name the database.
Loader = Callable[[], "Config"]


def _config(settings: Settings, config: Loader) -> Config | None:
    """The configuration, when it may name the database (no URL given directly)."""
    if settings.database_url is None and (settings.config_dir / "queues.yaml").exists():
        return config()
    return None


def _target(settings: Settings, config: Loader, *, start: bool = True) -> Target:
    return resolve(settings, _config(settings, config), start=start)


def _configured(settings: Settings, config: Loader) -> Target | None:
    """The database the flag, JOBSYS_DATABASE_URL or ``database.url`` names; None when
    nothing does (jobsys then uses the embedded server) or when a broken ``queues.yaml``
    cannot say: managing the embedded server must not depend on the config's health."""
    from jobsys.errors import ConfigError

    if settings.database_url:
        return resolve(settings, None, start=False)
    try:
        loaded = _config(settings, config)
    except ConfigError:
        return None
    if loaded is not None and loaded.queues.database.url:
        return resolve(settings, loaded, start=False)
    return None


def start(settings: Settings, config: Loader) -> dict[str, Any]:
    """Start the embedded server; refused when another database is configured (nothing
    would use it)."""
    configured = _configured(settings, config)
    if configured is not None:
        raise UsageError(
            "jobsys db start manages the embedded PostgreSQL server only, and this "
            f"configuration uses {configured.masked} ({configured.origin}); nothing was done.",
            hint=f"To start the embedded server, run without {configured.origin}.",
        )
    embedded.mark_stopped(settings.home, False)
    return _embedded_dict(embedded.start(settings.home))


def stop(settings: Settings, config: Loader) -> dict[str, Any]:
    """Stop the embedded server of ``settings.home``, always: ``make clean`` deletes its
    data directory right after, and a server left running on a deleted directory is
    worse than a stopped one. ``configured`` says which other database is in use."""
    configured = _configured(settings, config)
    was_running = embedded.stop(settings.home)
    if configured is None:
        embedded.mark_stopped(settings.home, True)
    return {
        "home": str(settings.home),
        "was_running": was_running,
        "running": False,
        "configured_database": configured.masked if configured is not None else None,
    }


def _embedded_dict(st: embedded.ServerStatus) -> dict[str, Any]:
    return {
        "home": str(st.home),
        "running": st.running,
        "pid": st.pid if st.running else None,
        "socket_dir": str(st.socket_dir) if st.running and st.socket_dir else None,
        "url": st.url,
    }


async def status(settings: Settings, config: Loader) -> dict[str, Any]:
    target = _configured(settings, config)
    result: dict[str, Any] = {"head_revision": HEAD_REVISION}
    if target is None:
        st = embedded.status(settings.home)
        result.update({"source": "embedded", "embedded": _embedded_dict(st), "url": st.url})
        url = st.url
    else:
        result.update({"source": target.source, "url": target.masked})
        url = target.url
    result["reachable"] = False
    result["revision"] = None
    if url:
        try:
            revisions = await _revisions(url)
            result["reachable"] = True
            result["revision"] = ", ".join(revisions) or None
        except DatabaseUnavailable as exc:
            result["error"] = exc.message
    result["up_to_date"] = result["revision"] == HEAD_REVISION
    return result


def embedded_left_running(settings: Settings, config: Loader) -> bool:
    """True when this configuration uses the embedded server and it is running."""
    return _configured(settings, config) is None and embedded.status(settings.home).running


def url(settings: Settings, config: Loader) -> str:
    return _target(settings, config).masked


def upgrade(settings: Settings, config: Loader, revision: str = "head") -> dict[str, Any]:
    """Migrate; with the embedded server, start it (``make run``'s first step, an
    explicit start even after ``jobsys db stop``)."""
    if _configured(settings, config) is None:
        embedded.mark_stopped(settings.home, False)
    target = _target(settings, config)
    before = migrate.current(target.url)
    migrate.upgrade(target.url, revision)
    after = migrate.current(target.url)
    return {"url": target.masked, "from": before, "to": after}


def downgrade(settings: Settings, config: Loader, revision: str) -> dict[str, Any]:
    target = _target(settings, config)
    before = migrate.current(target.url)
    migrate.downgrade(target.url, revision)
    return {"url": target.masked, "from": before, "to": migrate.current(target.url)}


async def _revisions(url: str) -> list[str]:
    # psycopg directly: Alembic and SQLAlchemy would triple this command's start-up.
    from jobsys.db.connect import connect, revisions

    async with connect(url) as conn:
        return await revisions(conn)


async def current(settings: Settings, config: Loader) -> dict[str, Any]:
    target = _target(settings, config)
    revisions = await _revisions(target.url)
    return {
        "url": target.masked,
        "revisions": revisions,
        "head": HEAD_REVISION,
        "up_to_date": revisions == [HEAD_REVISION],
    }


def check(settings: Settings, config: Loader) -> dict[str, Any]:
    """Drift between models and database; raises :class:`SchemaError` when behind."""
    target = _target(settings, config)
    diffs = migrate.drift(target.url)
    return {"url": target.masked, "in_sync": not diffs, "differences": diffs}


__all__ = [
    "SchemaError",
    "check",
    "current",
    "downgrade",
    "start",
    "status",
    "stop",
    "upgrade",
    "url",
]
