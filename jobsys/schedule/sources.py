"""Checks of fan-out sources against the database: the table exists, its id column is
an integer, its filter is valid SQL. Problems are located in schedule.yaml
(``config/schedule.yaml:14: entries.x.fanout.table: ...``) like every config error.
"""

from __future__ import annotations

from typing import Any

from jobsys.schedule.fanout import source_problems
from jobsys.schedule.plan import Schedule


async def problems_for(conn: Any, schedule: Schedule) -> list[str]:
    """One located line per problem of every enabled or disabled fan-out entry."""
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
            problems.append(f"{where}:{line}: {'.'.join(key)}: {problem}")
    return problems
