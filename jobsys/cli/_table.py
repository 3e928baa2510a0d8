"""Table layout for every list command: rows in, lines of text out (no Rich, no I/O).

The bar is ``kubectl get`` and ``gh``: one line per row, columns separated by two
spaces, never a word, id, time or task name split across lines or borders.

On a terminal the table fits its width: every :class:`Col` has a ``priority`` (0 is
always shown; the highest number gives way first, the rightmost of equals first);
atomic columns (ids, times, numbers, names) are shown whole or not at all; ``text``
columns shrink down to ``min`` characters and end in an ellipsis when cut. Times are
relative (``3m ago``, ``in 12s``). ``wide`` shows every column (``wide_only`` ones
too) with absolute times; output that is not a terminal keeps complete values and
absolute times, whatever its width.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from jobsys.clock import utc, utc_text
from jobsys.timespec import short

Kind = Literal["id", "name", "text", "time", "number", "duration", "flag"]

#: Spaces between two columns.
GAP = 2
ELLIPSIS = "…"


@dataclass(frozen=True)
class Col:
    """One column: the row key, its header, how it gives way, how it is written."""

    key: str
    header: str = ""
    kind: Kind = "name"
    priority: int = 1
    min: int = 12  # text columns: shrink down to this many characters, then drop
    want: int = 32  # text columns: room taken before less important columns get any
    wide_only: bool = False

    @property
    def title(self) -> str:
        return self.header or self.key.replace("_", " ")

    @property
    def shrinks(self) -> bool:
        return self.kind == "text"

    @property
    def right(self) -> bool:
        return self.kind in ("number", "duration", "id")


@dataclass(frozen=True)
class Layout:
    """What a table shows: its columns and their widths, then its lines."""

    columns: tuple[Col, ...]
    widths: tuple[int, ...]
    header: str
    lines: tuple[str, ...]
    dropped: tuple[str, ...]


def relative(value: datetime, now: datetime) -> str:
    """``45s ago``, ``3m ago``, ``5h ago``, ``2d ago``; ``in 3m`` for the future."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = (now - value).total_seconds()
    span = abs(seconds)
    if span < 1:
        return "now"
    if span < 60:
        amount = f"{int(span)}s"
    elif span < 3600:
        amount = f"{int(span // 60)}m"
    elif span < 86400:
        amount = f"{int(span // 3600)}h"
    else:
        amount = f"{int(span // 86400)}d"
    return f"{amount} ago" if seconds > 0 else f"in {amount}"


def absolute(value: datetime) -> str:
    """``2026-12-05T21:13:00Z``: UTC, to the second."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def human(value: datetime, now: datetime) -> str:
    """``2026-12-05 19:13:00 UTC (3m ago)``: what a ``show`` prints for a time."""
    return f"{utc_text(value, '%Y-%m-%d %H:%M:%S')} ({relative(value, now)})"


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def cell(value: Any, col: Col, *, now: datetime, absolute_times: bool) -> str:
    """One value as a single line of text."""
    if value is None or value == "":
        return "-"
    if col.kind == "time":
        when = _parse_time(value)
        if when is not None:
            return absolute(when) if absolute_times else relative(when, now)
    if col.kind == "duration" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return short(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
    return " ".join(str(value).split())


def clip(text: str, width: int) -> str:
    """At most ``width`` characters; a cut ends in an ellipsis."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + ELLIPSIS if width > 0 else ""


def _floor(col: Col, natural: int) -> int:
    """The narrowest a column may be: all of it for an atomic column."""
    if not col.shrinks:
        return natural
    return min(natural, max(col.min, len(col.title)))


def _fit(cols: Sequence[Col], natural: list[int], width: int) -> tuple[list[int], dict[int, int]]:
    """Which columns fit in ``width``, and how wide each is.

    Columns are admitted most important first (priority, then left to right); before
    a column is admitted, every text column more important than it gets the room it
    wants (``want``), so a title is not squeezed to make room for a status. The first
    column that does not fit ends the admission: the ones after it are less important.
    """
    order = sorted(range(len(cols)), key=lambda i: (cols[i].priority, i))
    keep: list[int] = []

    def room(candidate: int) -> int:
        total = 0
        for i in [*keep, candidate]:
            c = cols[i]
            floor = _floor(c, natural[i])
            if c.shrinks and c.priority < cols[candidate].priority:
                floor = max(floor, min(natural[i], c.want))
            total += floor
        return total + GAP * len(keep)

    for i in order:
        if keep and cols[i].priority > 0 and room(i) > width:
            break
        keep.append(i)
    keep.sort()
    widths = {i: _floor(cols[i], natural[i]) for i in keep}
    spare = width - sum(widths.values()) - GAP * (len(keep) - 1)
    # Spare room goes to shrunk text columns, most important first.
    for i in sorted(keep, key=lambda i: (cols[i].priority, i)):
        grow = max(0, min(spare, natural[i] - widths[i]))
        widths[i] += grow
        spare -= grow
    for i in reversed(keep):  # the columns that always show do not fit: cut the last
        if spare >= 0:
            break
        cut = min(-spare, widths[i] - 1)
        widths[i] -= cut
        spare += cut
    return keep, widths


def layout(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Col],
    *,
    width: int | None,
    wide: bool = False,
    absolute_times: bool | None = None,
    now: datetime | None = None,
) -> Layout:
    """Lay ``rows`` out in ``width`` characters (None: not a terminal, nothing cut).

    Times are relative in a fitted table unless ``absolute_times`` (a ``show``)."""
    now = now or datetime.now(UTC)
    fitted = width is not None and not wide
    cols = [c for c in columns if wide or not c.wide_only]
    if absolute_times is None:
        absolute_times = not fitted
    cells = [
        [cell(row.get(c.key), c, now=now, absolute_times=absolute_times) for c in cols]
        for row in rows
    ]
    natural = [max([len(c.title)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    keep = list(range(len(cols)))
    dropped: list[str] = []
    widths = {i: natural[i] for i in keep}
    if fitted:
        assert width is not None
        keep, widths = _fit(cols, natural, width)
        dropped = [cols[i].title for i in range(len(cols)) if i not in keep]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, text in zip(keep, values, strict=True):
            text = clip(text, widths[i])
            parts.append(text.rjust(widths[i]) if cols[i].right else text.ljust(widths[i]))
        return (" " * GAP).join(parts).rstrip()

    header = line([cols[i].title for i in keep])
    lines = tuple(line([r[i] for i in keep]) for r in cells)
    return Layout(
        columns=tuple(cols[i] for i in keep),
        widths=tuple(widths[i] for i in keep),
        header=header,
        lines=lines,
        dropped=tuple(dropped),
    )
