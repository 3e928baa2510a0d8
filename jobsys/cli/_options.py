"""Option declarations shared by every command (sqlite-utils' ``output_options``)."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
WideOpt = Annotated[
    bool,
    typer.Option("--wide", "-w", help="Every column, complete values and absolute times (UTC)."),
]
