"""Fingerprints: which failures are "the same problem". Pure functions, no I/O.

A job failure's fingerprint is task + error class + the message normalised so that
ids, numbers, hex, uuids, quoted values, emails and URLs do not split groups + the
innermost frame of the application's own code (module and function, not the line:
a deploy that shifts lines must not open a new issue). Health issues have fixed,
readable fingerprints (``queue_health:<queue>:<signal>``, ``service_outage:<name>``).
"""

from __future__ import annotations

import hashlib
import re
import sysconfig
from collections.abc import Iterable
from types import TracebackType

from jobsys import engine

MAX_TITLE_CHARS = 200

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(\.[\w-]+)+\b"), "<email>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "<str>"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), "<str>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    # Long hex runs (hashes, object ids) with at least one digit, so words stay words.
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I), "<hex>"),
    # Digit runs anywhere, glued to words too (host12, job-77): ids never split groups.
    (re.compile(r"\d+(?:[.,:]\d+)*"), "<n>"),
)
_SPACES = re.compile(r"\s+")

#: Modules whose frames are never "the application's code".
LIBRARY_PREFIXES = ("jobsys.", f"{engine.PACKAGE}.", "psycopg.", "psycopg_pool.", "asyncio.")
#: ...except the bundled demo, which is an application.
APPLICATION_PREFIXES = ("jobsys.demo.",)
_LIBRARY_DIRS = tuple(
    {p for key in ("stdlib", "platstdlib", "purelib", "platlib") if (p := sysconfig.get_path(key))}
)


def normalise_message(message: str) -> str:
    text = message.strip()
    for pattern, placeholder in _PATTERNS:
        text = pattern.sub(placeholder, text)
    return _SPACES.sub(" ", text)[:500]


def is_application_frame(module: str, filename: str, app_packages: Iterable[str] = ()) -> bool:
    dotted = module + "."
    if any(dotted.startswith(p) for p in APPLICATION_PREFIXES):
        return True
    if any(dotted.startswith(pkg + ".") for pkg in app_packages if pkg):
        return True
    if dotted.startswith(LIBRARY_PREFIXES) or module in ("jobsys", engine.PACKAGE):
        return False
    return not filename.startswith(_LIBRARY_DIRS) and not filename.startswith("<")


def application_frame(tb: TracebackType | None, app_packages: Iterable[str] = ()) -> str | None:
    """``module:function`` of the innermost frame that belongs to the application."""
    packages = tuple(app_packages)
    found = None
    while tb is not None:
        frame = tb.tb_frame
        module = str(frame.f_globals.get("__name__", ""))
        if is_application_frame(module, frame.f_code.co_filename, packages):
            found = f"{module}:{frame.f_code.co_qualname}"
        tb = tb.tb_next
    return found


def job_failure(
    task: str, error_class: str, message: str, frame: str | None, kind: str | None = None
) -> str:
    """The fingerprint of a job failure. Authentication failures are an account's
    problem, not a task's: the same login wall hit by several tasks is ONE issue
    counting every affected account, so task and frame are left out for them."""
    if kind == "authentication":
        task, frame = "", None
    parts = "\x1f".join((task, error_class, normalise_message(message), frame or ""))
    return "job_failure:" + hashlib.sha256(parts.encode()).hexdigest()[:32]


def queue_health(scope: str, signal: str) -> str:
    return f"queue_health:{scope}:{signal}"


def service_outage(service: str) -> str:
    return f"service_outage:{service}"


def job_failure_title(task: str, error_class: str, message: str, kind: str | None = None) -> str:
    """A readable title from already-redacted data.

    The message's first line is normalised as the fingerprint normalises it: the title
    is written by the group's first failure but names the whole group, so it must not
    carry that failure's ids ("account 37" for an issue over 28 accounts)."""
    short = error_class.rsplit(".", 1)[-1]
    first_line = normalise_message(message.strip().splitlines()[0]) if message.strip() else ""
    # An authentication issue spans tasks (one login wall): no task in its title.
    where = short if kind == "authentication" else f"{short} in {task}"
    title = f"{where}: {first_line}" if first_line else where
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 1] + "…"
