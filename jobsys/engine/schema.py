"""The one place that records which Procrastinate schema jobsys installs.

``migrations/procrastinate/schema-<version>.sql`` is a verbatim snapshot of
``procrastinate/sql/schema.sql`` of that version, applied by the first Alembic
revision. A test checks that the installed Procrastinate matches the pin and that
the snapshot equals its schema, so bumping Procrastinate cannot go unnoticed.

Upgrading Procrastinate (documented in README, "Upgrading Procrastinate"):
1. bump the pin in ``pyproject.toml`` and ``PINNED_VERSION`` here;
2. add an Alembic revision calling :func:`migration_sql` for the version range, which
   applies Procrastinate's own ``sql/migrations/*.sql`` files in order;
3. keep the old snapshot: revision 0001 must always install the same schema.
"""

from __future__ import annotations

from pathlib import Path

PINNED_VERSION = "3.10.0"
#: The Alembic revision that installs the snapshot (the first one).
INSTALL_REVISION = "0001_procrastinate"
SNAPSHOT_DIR = Path(__file__).resolve().parents[2] / "migrations" / "procrastinate"


def snapshot_path(version: str = PINNED_VERSION) -> Path:
    return SNAPSHOT_DIR / f"schema-{version}.sql"


def snapshot_sql(version: str = PINNED_VERSION) -> str:
    return snapshot_path(version).read_text(encoding="utf-8")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split("_", 1)[0].split("."))


def migration_sql(from_version: str, to_version: str) -> list[str]:
    """Procrastinate's migration scripts strictly after ``from_version`` up to ``to_version``."""
    from procrastinate.schema import migrations_path

    low = tuple(int(p) for p in from_version.split("."))
    high = tuple(int(p) for p in to_version.split("."))
    scripts = sorted(migrations_path.glob("*.sql"), key=lambda p: (_version_key(p.name), p.name))
    return [
        p.read_text(encoding="utf-8") for p in scripts if low < _version_key(p.name)[:3] <= high
    ]
