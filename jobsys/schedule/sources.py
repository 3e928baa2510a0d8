"""Checks of fan-out sources against the database: the table exists, its id column is
an integer, its filter is valid SQL. Problems are located in schedule.yaml
(``config/schedule.yaml:14: entries.x.fanout.table: ...``) like every config error.

A table that does not exist (yet) is not a configuration error: the application
creates its tables when it likes (the demo's ``demo_accounts`` only once seeded). The
scheduler sets such an entry aside and takes it up when the table appears; ``config
check`` and ``schedule check`` warn about it without failing. Any other problem of a
source (a non-integer id column, a filter that is not valid SQL) is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobsys.schedule.fanout import source_problems
from jobsys.schedule.plan import Schedule


@dataclass(frozen=True)
class SourceProblem:
    entry: str
    field: str  # table, id_column or where
    line: str  # located: ``schedule.yaml:14: entries.x.fanout.table: ...``

    @property
    def waiting_for_table(self) -> bool:
        """The source table does not exist (yet): a warning, not an error."""
        return self.field == "table"


async def source_problems_of(conn: Any, schedule: Schedule) -> list[SourceProblem]:
    """Every problem of every fan-out entry's source (enabled or not), located."""
    from jobsys.config import display_path
    from jobsys.config.yamlfile import LocatedDocument, YamlProblem, read

    doc: LocatedDocument | None = None
    if schedule.source_file is not None:
        try:
            doc = read(schedule.source_file)
        except YamlProblem:
            doc = None
    where = display_path(schedule.source_file) if schedule.source_file else "schedule.yaml"
    problems = []
    for entry in schedule.entries.values():
        if entry.fanout is None:
            continue
        for field, problem in await source_problems(conn, entry.fanout.source):
            key = ("entries", entry.name, "fanout", field)
            line = doc.line_of(key) if doc else 1
            problems.append(
                SourceProblem(entry.name, field, f"{where}:{line}: {'.'.join(key)}: {problem}")
            )
    return problems


async def problems_for(conn: Any, schedule: Schedule) -> list[str]:
    """One located line per problem of every fan-out entry, missing tables included."""
    return [p.line for p in await source_problems_of(conn, schedule)]
