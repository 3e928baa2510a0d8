"""The SQLAlchemy declarative base shared by every domain's table models.

Models exist for the schema (Alembic autogenerate and drift checks); runtime
queries live as named SQL in each domain's ``store`` module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from sqlalchemy import BigInteger, CheckConstraint, MetaData, Text, text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    #: Every ``Mapped[datetime]`` column is a ``timestamptz``, every ``Mapped[str]``
    #: column a ``text``.
    type_annotation_map = {datetime: TIMESTAMP(timezone=True), str: Text()}


#: A ``timestamptz`` column that defaults to the inserting transaction's ``now()``.
NowTimestamp = Annotated[datetime, mapped_column(server_default=text("now()"))]
#: A ``jsonb`` object column that defaults to ``{}``.
JsonObject = Annotated[dict[str, Any], mapped_column(JSONB, server_default=text("'{}'::jsonb"))]
#: A table's own ``bigint`` identity: ``id: Mapped[SerialId]``.
SerialId = Annotated[int, mapped_column(BigInteger, primary_key=True, autoincrement=True)]


def one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    """A check that ``column`` holds one of ``values``, named after the column
    (``ck_<table>_<column>``)."""
    return CheckConstraint(f"{column} IN {values!r}", name=column)


class Progress:
    """The columns of a row that records work while it goes (a pipeline, its steps, a
    fan-out run, a bulk action): when it last moved, and when it finished (None: still
    going)."""

    updated_at: Mapped[NowTimestamp]
    finished_at: Mapped[datetime | None]
