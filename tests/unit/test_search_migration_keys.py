"""Migration 0021 seeds the search state's redacted keys with its own copy of the
defaults of ``redaction.keys`` (a migration does not import the application): the copy
must stay the defaults, or the side text of a fresh database would redact less."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from jobsys.config.models import DEFAULT_REDACTED_KEYS

MIGRATION = (
    Path(__file__).resolve().parents[2] / "migrations/versions/0021_job_search_side_table.py"
)


def test_the_migrations_keys_are_the_redaction_defaults() -> None:
    spec = importlib.util.spec_from_file_location("migration_0021", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert tuple(module.DEFAULT_KEYS) == tuple(DEFAULT_REDACTED_KEYS)
