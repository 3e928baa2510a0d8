"""The thin operator CLI: parse options, call one function, render. Nothing imports it."""

import os

# Plain help and usage errors: Typer's Rich formatting costs ~130 ms of imports on every
# command (it doubled `jobsys --help`); tables and live views still use Rich
# (``_output``). Set TYPER_USE_RICH=1 to get the boxed help back.
os.environ.setdefault("TYPER_USE_RICH", "0")
