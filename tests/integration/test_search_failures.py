"""``failures list --error TEXT`` and ``retry --all --error TEXT``: a case-insensitive,
literal substring of the message or the error class, checked against a Python oracle
over every row (``%``, ``_``, backslashes, quotes and non-ASCII included), and served
by the trigram indexes."""

from __future__ import annotations

import random
from typing import Any

import failures_support as fx
import psycopg
import pytest

PIECES = [
    "checkpoint required",
    "Checkpoint REQUIRED",
    "100%",
    "100% done",
    "a_b",
    "aXb",
    "o'brien",
    'say "hi"',
    "back\\slash",
    "back\\\\slash",
    "Ärger",
    "ärger",
    "ΩMEGA",
    "ωmega",
    "日本語",
    "🙂 ok",
    "timeout",
    "%_",
    "x",
]
CLASSES = [
    "builtins.ValueError",
    "jobsys.errors.TransientError",
    "app.errors.Checkpoint_Required",
    "app.errors.CheckpointXRequired",
    "app.errors.Ärger",
]
NEEDLES = [
    "checkpoint required",
    "CHECKPOINT",
    "100%",
    "%",
    "_",
    "a_b",
    "\\",
    "\\\\",
    "o'brien",
    "'",
    '"hi"',
    "ÄRGER",
    "Ωmega",
    "日本",
    "🙂",
    "checkpoint_required",
    "valueerror",
    "Errors.Ä",
    "%_",
    "no such text anywhere",
]


def seed(db_url: str, count: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(15)
    rows = [
        (
            n + 1,
            rng.choice(CLASSES),
            " ".join(rng.sample(PIECES, rng.randint(1, 3))),
        )
        for n in range(count)
    ]
    with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO jobsys_failures (job_id, task, queue, attempt, error_class, "
            "message, kind, retryable) VALUES (%s, 't', 'q', 1, %s, %s, 'runtime', true)",
            rows,
        )
    return fx.rows(db_url, "SELECT * FROM jobsys_failures ORDER BY occurred_at DESC, id DESC")


def oracle(rows: list[dict[str, Any]], needle: str) -> list[int]:
    text = needle.lower()
    return [
        r["id"] for r in rows if text in r["message"].lower() or text in r["error_class"].lower()
    ]


def test_error_search_equals_a_python_oracle(cli: Any, db_url: str) -> None:
    rows = seed(db_url)
    sampled = [r["message"][2:9] for r in rows[:40]]
    needles = NEEDLES + [s for s in sampled if s.strip()][:20]
    nonempty = 0
    for needle in needles:
        result = cli(
            "--database-url", db_url, "failures", "list", "--error", needle, "--limit", "10000",
            "--json",
        )  # fmt: skip
        assert result.exit_code == 0, (needle, result.stderr)
        got = [f["id"] for f in result.json()["items"]]
        assert got == oracle(rows, needle), needle
        nonempty += bool(got)
    assert nonempty >= len(needles) - 2  # the oracle is not trivially empty
    # the filter combines with the others (AND)
    got = cli(
        "--database-url", db_url, "failures", "list", "--error", "checkpoint",
        "--kind", "transient", "--json",
    ).json()  # fmt: skip
    assert got["items"] == []


@pytest.mark.parametrize("few", [3, 40, 100_000])
def test_both_shapes_of_the_error_search_page_like_the_oracle(
    cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    """``--error`` takes up to ``BY_TEXT_FEW`` matches by the trigram indexes and sorts
    them, or walks the list's order when there are that many: each needle here lands on
    both sides of 3 and 40 (and under 100,000), pages (``--before``) included."""
    from jobsys.failures import store

    monkeypatch.setattr(store, "BY_TEXT_FEW", few)
    rows = seed(db_url, 300)
    for needle in ("checkpoint", "100%", "a_b", "ärger", "日本", "no such text anywhere"):
        want = oracle(rows, needle)
        got: list[int] = []
        before: list[str] = []
        while True:
            result = cli(
                "--database-url", db_url, "failures", "list", "--error", needle, "-n", "7",
                *before, "--json",
            )  # fmt: skip
            assert result.exit_code == 0, result.stderr
            doc = result.json()
            got += [f["id"] for f in doc["items"]]
            if doc["next_before"] is None:
                break
            before = ["--before", str(doc["next_before"])]
        assert got == want, (needle, few)
        retried = cli(
            "--database-url", db_url, "retry", "--all", "--error", needle, "--dry-run",
            "--limit", "10000", "--json",
        )  # fmt: skip
        if not want:  # nothing matches: nothing retried, exit 1
            assert retried.exit_code == 1 and "no failure matches" in retried.stderr
            continue
        assert retried.exit_code == 0, retried.stderr
        results = retried.json()["results"]
        assert sorted(r["failure_id"] for r in results) == sorted(want), needle


def test_retry_all_by_error_picks_the_same_failures(cli: Any, db_url: str) -> None:
    rows = seed(db_url, 120)
    for needle in ("100%", "a_b", "ärger"):
        result = cli(
            "--database-url", db_url, "retry", "--all", "--error", needle, "--dry-run",
            "--limit", "10000", "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        report = result.json()
        assert report["filters"] == {"error": needle}
        assert sorted(r["failure_id"] for r in report["results"]) == sorted(oracle(rows, needle))


def test_bad_error_values_are_usage_errors(cli: Any, db_url: str) -> None:
    for value in ("", "   ", "a\x00b", "x" * 1001):
        result = cli("--database-url", db_url, "failures", "list", "--error", value)
        assert result.exit_code == 2, value
        assert "--error" in result.stderr and "Traceback" not in result.stderr


def test_error_search_uses_the_trigram_indexes(db_url: str) -> None:
    from jobsys.failures import store

    where = store.where_clause({"error": "checkpoint required"})
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table: make the choice visible
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN SELECT id FROM jobsys_failures f WHERE {where}",
                {"error": "checkpoint required"},
            ).fetchall()
        )
    assert "ix_jobsys_failures_message_trgm" in plan, plan
    assert "ix_jobsys_failures_error_class_trgm" in plan, plan
