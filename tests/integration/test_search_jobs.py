"""``jobs list --arg KEY=VALUE`` and ``--arg-contains TEXT`` against a Python oracle
over every row: nested keys, numbers and strings, ``%``, ``_``, quotes, backslashes,
non-ASCII; redacted keys refused or never searched; malformed input exits 2."""

from __future__ import annotations

import json
import random
from typing import Any

import psycopg
import pytest

from jobsys.failures.redaction import Redactor
from jobsys.jobs import search

WORDS = [
    "story 9812",
    "100%",
    "a_b",
    "aXb",
    "o'brien",
    'say "hi"',
    "back\\slash",
    "Ärger",
    "ωmega",
    "日本語",
    "🙂",
    "checkpoint",
    "42",
]
KEYS = ["account_id", "story", "note", "100%", "a_b", "ключ", "o'k"]


def random_args(rng: random.Random) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for key in rng.sample(KEYS, rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.3:
            args[key] = rng.choice([42, 7, "42", "7", 9812])
        elif kind < 0.7:
            args[key] = rng.choice(WORDS)
        elif kind < 0.85:
            args[key] = {"id": rng.choice([42, "42", 7]), "name": rng.choice(WORDS)}
        else:
            args[key] = [rng.choice(WORDS), rng.choice([42, 7])]
    if rng.random() < 0.3:
        args["api_token"] = rng.choice(["story 9812", "sekret-42", "checkpoint"])
    return args


def seed(db_url: str, count: int = 500) -> list[tuple[int, dict[str, Any]]]:
    rng = random.Random(42)
    all_args = [random_args(rng) for _ in range(count)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES ('default', 'demo.noop', %s::jsonb)",
                [(json.dumps(a),) for a in all_args],
            )
        rows = conn.execute("SELECT id, args FROM procrastinate_jobs ORDER BY id DESC").fetchall()
    return [(int(r[0]), r[1]) for r in rows]


def at_path(args: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(args, dict) or key not in args:
            return KeyError
        args = args[key]
    return args


def arg_oracle(rows: list[tuple[int, dict[str, Any]]], key: str, value: Any) -> list[int]:
    """Rows whose args hold ``value`` at ``key`` (the CLI's alternatives for a raw
    ``VALUE`` text: the string, and the number when it is one)."""
    wanted = [value]
    if isinstance(value, str) and value.lstrip("-").isdigit():
        wanted.append(int(value))
    out = []
    for job_id, args in rows:
        found = at_path(args, key.split("."))
        if any(found == w and type(found) is type(w) for w in wanted):
            out.append(job_id)
    return out


def contains_oracle(rows: list[tuple[int, dict[str, Any]]], text: str) -> list[int]:
    redactor = Redactor()
    return [
        job_id
        for job_id, args in rows
        if any(text.lower() in v.lower() for v in search.scalar_texts(redactor.redact(args)))
    ]


def listed(cli: Any, db_url: str, *args: str) -> list[int]:
    result = cli("--database-url", db_url, "jobs", "list", *args, "--limit", "10000", "--json")
    assert result.exit_code == 0, (args, result.stderr)
    return [j["id"] for j in result.json()["items"]]


def test_arg_search_equals_a_python_oracle(cli: Any, db_url: str) -> None:
    rows = seed(db_url)
    cases = [(k, v) for k in KEYS for v in ("42", "7", "9812", "story 9812", "100%", "a_b")]
    cases += [("note.id", "42"), ("story.name", "o'brien"), ("ключ.id", "7"), ("a_b", "日本語")]
    cases += [("100%", 'say "hi"'), ("o'k", "back\\slash"), ("note", "Ärger")]
    hits = 0
    for key, value in cases:
        got = listed(cli, db_url, "--arg", f"{key}={value}")
        assert got == arg_oracle(rows, key, value), (key, value)
        hits += len(got)
    assert hits > 100
    # repeatable: all must hold
    both = listed(cli, db_url, "--arg", "account_id=42", "--arg", "note=checkpoint")
    assert both == [
        j
        for j in arg_oracle(rows, "account_id", "42")
        if j in arg_oracle(rows, "note", "checkpoint")
    ]
    # a quoted JSON string matches only the string
    quoted = listed(cli, db_url, "--arg", 'account_id="42"')
    assert quoted == [j for j, a in rows if a.get("account_id") == "42"]
    assert listed(cli, db_url, "--arg", "account_id=42", "--arg", "account_id=7") == []


def test_arg_contains_equals_a_python_oracle_and_never_matches_secrets(
    cli: Any, db_url: str
) -> None:
    rows = seed(db_url)
    needles = ["9812", "STORY", "%", "_", "a_b", "'", '"hi"', "\\", "ärger", "Ω", "日本", "🙂"]
    needles += ["sekret", "42", "checkpoint", "no such text"]
    for needle in needles:
        assert listed(cli, db_url, "--arg-contains", needle) == contains_oracle(rows, needle), (
            needle
        )
    # only in secrets: found by nobody, though the database holds it
    assert contains_oracle(rows, "sekret") == []
    assert any("sekret" in json.dumps(a) for _, a in rows)
    # with a small limit, pages on past candidates that matched only a secret
    first = listed(cli, db_url, "--arg-contains", "checkpoint")[:3]
    result = cli(
        "--database-url", db_url, "jobs", "list", "--arg-contains", "checkpoint", "-n", "3",
        "--json",
    )  # fmt: skip
    assert [j["id"] for j in result.json()["items"]] == first


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("account_id", "give KEY=VALUE"),
        ("=42", "is not a key path"),
        ("a..b=1", "is not a key path"),
        (".a=1", "is not a key path"),
        ("a.=1", "is not a key path"),
        ("api_token=x", "redacted argument"),
        ("customer.password=x", "redacted argument"),
    ],
)
def test_malformed_or_secret_arg_is_a_usage_error(
    cli: Any, db_url: str, value: str, says: str
) -> None:
    result = cli("--database-url", db_url, "jobs", "list", "--arg", value)
    assert result.exit_code == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


def test_arg_uses_its_index_and_arg_contains_reads_newest_first(db_url: str) -> None:
    from jobsys.engine import queries

    params = {
        "queues": None, "task": None, "statuses": None, "account_docs": None, "min_id": None,
        "max_id": None, "since": None, "limit": 50, "arg_contains": None,
        "arg_docs": ['{"account_id": 42}'],
    }  # fmt: skip
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_indexscan = off")  # not the primary key's order walk
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + queries.LIST_JOBS, params))
        assert "ix_jobsys_jobs_args_path" in plan, plan
        # --arg-contains has no index of its own (0017 dropped the trigram one): it
        # reads the jobs newest first by primary key and stops at the limit.
        conn.execute("SET enable_indexscan = on")
        params.update(arg_docs=None, arg_contains="story 9812")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + queries.LIST_JOBS, params))
        assert "Index Scan Backward using procrastinate_jobs_pkey" in plan, plan
        assert "trgm" not in plan, plan
