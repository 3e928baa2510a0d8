"""Search jobs by what they carry: ``--arg KEY=VALUE`` and ``--arg-contains TEXT``. Pure.

``--arg KEY=VALUE`` (repeatable, all must hold) is JSON containment on the job's
args: ``KEY`` is a path of object keys joined by dots (``customer.id=42`` matches
``{"customer": {"id": 42, ...}}``); ``VALUE`` matches as the plain string and, when it
parses as a JSON number, ``true``, ``false``, ``null``, array or object, as that JSON
too (``account_id=42`` finds ``42`` and ``"42"``); a JSON string in quotes
(``name="42"``) matches only that string. Containment means an object or array VALUE
matches args that hold at least what it holds. The documents are built here and
reach SQL as bound parameters (``args @> ANY(docs)``, GIN ``jsonb_path_ops``).

``--arg-contains TEXT`` is a case-insensitive, literal substring of any string or
number value in the args. Values of redacted keys are never searched: the database
narrows the candidates (walking the jobs newest first, no index: a trigram index made
every job status change twice as costly, migration 0017) and :func:`contains_text`
re-checks each on the args without their redacted values, so a secret cannot be found
by its value, nor a job by the text that replaces a secret. For the same reason
``--arg`` on a redacted key is refused.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jobsys.errors import UsageError
from jobsys.failures.redaction import Redactor

#: Alternatives multiply across ``--arg``s (each has one or two): capped.
MAX_ARG_DOCS = 256
MAX_TEXT = 1000


@dataclass(frozen=True)
class ArgMatch:
    path: tuple[str, ...]
    values: tuple[Any, ...]  # alternatives, any of which may match

    def documents(self) -> list[dict[str, Any]]:
        out = []
        for value in self.values:
            doc: Any = value
            for key in reversed(self.path):
                doc = {key: doc}
            out.append(doc)
        return out


def parse_arg(text: str, redactor: Redactor) -> ArgMatch:
    """One ``--arg KEY=VALUE`` (UsageError, exit 2, for a malformed one)."""
    if "=" not in text:
        raise UsageError(
            f"--arg {text!r}: give KEY=VALUE (for example --arg account_id=42).",
        )
    key, raw = text.split("=", 1)
    if "\x00" in text or len(text) > MAX_TEXT:
        raise UsageError(f"--arg: give a value without NUL, under {MAX_TEXT} characters.")
    path = tuple(key.split("."))
    if not key or any(not part or part != part.strip() for part in path):
        raise UsageError(
            f"--arg {text!r}: {key!r} is not a key path; give keys joined by dots, "
            "none empty, without surrounding spaces (for example customer.id=42).",
        )
    secret = [part for part in path if redactor.is_secret_key(part)]
    if secret:
        raise UsageError(
            f"--arg {text!r}: {secret[0]!r} is a redacted argument; searching by its value "
            "is refused (it would reveal secrets).",
            hint="Search by another argument, or by --task/--queue/--status.",
        )
    values: list[Any] = [raw]
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw
    if isinstance(parsed, str):
        values = [parsed]
    elif not isinstance(parsed, float) or parsed == parsed:  # NaN is no JSON value
        values.append(parsed)
    return ArgMatch(path, tuple(values))


def arg_documents(matches: Iterable[ArgMatch]) -> list[str] | None:
    """JSON documents for ``args @> ANY(docs)``: one per combination of alternatives in
    which every ``--arg`` holds at once; None when no ``--arg`` is given. A combination
    that asks one key for two different values can match no args and is left out (all
    left out: an empty list, which matches nothing)."""
    matches = list(matches)
    if not matches:
        return None
    docs = set()
    for combo in itertools.product(*(m.documents() for m in matches)):
        merged: dict[str, Any] = {}
        if all(_merge(merged, doc) for doc in combo):
            docs.add(json.dumps(merged, ensure_ascii=False, sort_keys=True))
        if len(docs) > MAX_ARG_DOCS:
            raise UsageError("too many --arg values at once; give fewer.")
    return sorted(docs)


def _merge(into: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Merge ``doc`` into ``into``; False when they disagree on a value."""
    for key, value in doc.items():
        if key not in into:
            into[key] = value
        elif isinstance(value, dict) and isinstance(into[key], dict):
            if not _merge(into[key], value):
                return False
        elif into[key] != value or type(into[key]) is not type(value):
            return False
    return True


def check_contains(text: str | None) -> str | None:
    if text is None:
        return None
    if not text.strip():
        raise UsageError("--arg-contains must not be empty.")
    if "\x00" in text or len(text) > MAX_TEXT:
        raise UsageError(f"--arg-contains: give a text without NUL, under {MAX_TEXT} characters.")
    return text


def raw_json(text: str) -> Any:
    """Args from their JSON text (``args::text``) with every number kept as the text
    PostgreSQL wrote (``2.50`` stays ``2.50``): what ``jobsys_args_text`` searches."""
    return json.loads(text, parse_int=_Number, parse_float=_Number)


class _Number(str):
    """A JSON number as its text."""


def scalar_texts(value: Any) -> Iterable[str]:
    """Every string and number value in ``value``, as text (the database's
    ``jobsys_args_text`` lists the same)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from scalar_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from scalar_texts(item)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield json.dumps(value)


#: What a redacted value becomes for the re-check: a NUL, which no ``--arg-contains``
#: text holds (:func:`check_contains` refuses it) and no job's value can (``jsonb``
#: refuses ``\u0000``).
UNSEARCHABLE = "\x00"


@functools.cache
def _unsearchable(keys: tuple[str, ...]) -> Redactor:
    return Redactor(keys=keys, replacement=UNSEARCHABLE)


def contains_text(args_text: str, text: str, redactor: Redactor) -> bool:
    """Whether ``text`` occurs, case-insensitively, in a value of the args (their JSON
    text, ``args::text``), never in the value of a key ``redactor`` redacts: neither the
    secret nor what ``jobs list`` shows in its place (``redaction.replacement``). So the
    answer does not depend on the configured replacement, nor on how the search index's
    side text marks a secret (``[REDACTED]``, migration 0021), nor on whether the job
    is indexed yet."""
    needle = text.lower()
    redacted = _unsearchable(redactor.keys).redact(raw_json(args_text))
    return any(needle in value.lower() for value in scalar_texts(redacted))
