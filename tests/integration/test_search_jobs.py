"""``jobs list --arg KEY=VALUE`` and ``--arg-contains TEXT`` against a Python oracle
over every row: nested keys, numbers and strings, ``%``, ``_``, quotes, backslashes,
non-ASCII; redacted keys refused or never searched; malformed input exits 2."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import psycopg
import pytest
from conftest import CONFIG_DIR

from jobsys.failures.redaction import Redactor
from jobsys.jobs import search
from jobsys.jobs.search_index import IndexResult, index_pass

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


def index_pass_sync(db_url: str, **kwargs: Any) -> IndexResult:
    async def run() -> IndexResult:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await index_pass(conn, **kwargs)

    return asyncio.run(run())


def cursor_of(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT indexed_up_to FROM jobsys_job_search_state").fetchone()
    assert row is not None
    return int(row[0])


def index_until(db_url: str, job_id: int, **kwargs: Any) -> int:
    """Search-index passes until the cursor reaches ``job_id`` (the first pass only
    records the stretch; a later one copies it once its transactions are over; other
    sessions of the shared server, in any database, can delay that a while)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        index_pass_sync(db_url, **kwargs)
        cursor = cursor_of(db_url)
        if cursor >= job_id:
            return cursor
        time.sleep(0.05)
    raise AssertionError(f"the cursor stayed at {cursor_of(db_url)} below {job_id}")


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
    """Rows with ``text`` in a value that is not redacted (the secret and its replacement
    both out of reach)."""
    redactor = Redactor(replacement="")
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


@pytest.mark.parametrize("indexed", ["none", "part", "all"])
def test_arg_contains_equals_a_python_oracle_and_never_matches_secrets(
    cli: Any, db_url: str, indexed: str
) -> None:
    """Exact whatever the search-index pass has copied: nothing (every job in the tail
    filtered row by row), part of the jobs, or all of them."""
    rows = seed(db_url)
    newest, oldest = rows[0][0], rows[-1][0]
    if indexed == "all":
        assert index_until(db_url, newest) == newest
    elif indexed == "part":
        index_until(db_url, oldest, batch=150, max_batches=1)
        assert oldest <= cursor_of(db_url) < newest
        assert index_pass_sync(db_url, batch=150, max_batches=1).copied == 150
        assert oldest + 150 <= cursor_of(db_url) < newest
    else:
        assert cursor_of(db_url) < oldest
    needles = ["9812", "STORY", "%", "_", "a_b", "'", '"hi"', "\\", "ärger", "Ω", "日本", "🙂"]
    needles += ["sekret", "42", "checkpoint", "no such text"]
    # in a key only (the JSON text the row filter tries first has it, the values not),
    # and texts around what JSON escapes (the row filter's shortcut is off for those)
    needles += ["ключ", "o'k", 'y "h', "k\\s"]
    for needle in needles:
        assert listed(cli, db_url, "--arg-contains", needle) == contains_oracle(rows, needle), (
            needle
        )
    # the escaped ones are found (JSON has them as \" and \\), the key-only one is not
    assert contains_oracle(rows, 'y "h') and contains_oracle(rows, "k\\s")
    assert contains_oracle(rows, "ключ") == [] and any("ключ" in a for _, a in rows)
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


def test_arg_and_arg_contains_use_their_indexes(db_url: str) -> None:
    from jobsys.engine import queries

    params = {
        "queues": None, "task": None, "statuses": None, "account_docs": None, "min_id": None,
        "max_id": None, "since": None, "limit": 50, "arg_contains": None,
        "arg_docs": ['{"account_id": 42}'], "search_cursor": 1_000_000,
    }  # fmt: skip
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_indexscan = off")  # not the primary key's order walk
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + queries.LIST_JOBS, params))
        assert "ix_jobsys_jobs_args_path" in plan, plan
        # --arg-contains: the trigram index of the side table (0021), not the job table
        params.update(arg_docs=None, arg_contains="story 9812")
        listing = queries.LIST_JOBS_CONTAINING
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + listing, params))
        assert "ix_jobsys_job_search_trgm" in plan, plan


def test_the_pass_redacts_inline_not_through_a_function_call(db_url: str) -> None:
    """Migration 0023: the pass's redaction is inlined into its batch statement. Called
    as a function (0021's STRICT body with a sub-select), it cost ~88 µs a job, nine
    tenths of the pass; the plan must show the CASE, not the call."""
    from jobsys.engine import queries

    with psycopg.connect(db_url, autocommit=True) as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN VERBOSE " + queries.SEARCH_INDEX_BATCH, {"upto": 10, "batch": 5}
            )
        )
    assert "jobsys_redacted_args_text" not in plan, plan
    assert "jobsys_args_text(" in plan and "jobsys_redacted_walk_text(" in plan, plan


def test_the_pass_batch_is_costed_below_jit(db_url: str) -> None:
    """The state table (one row) has no statistics; read without ``LIMIT 1`` the planner
    took it for hundreds of rows, costed a batch above ``jit_above_cost`` and JIT-compiled
    every batch (~0.5 s each, four fifths of the pass)."""
    from jobsys.engine import queries

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'default', 'demo.noop', '{}' FROM generate_series(1, 20000)"
        )
        conn.execute("ANALYZE procrastinate_jobs")
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) " + queries.SEARCH_INDEX_BATCH,
            {"upto": 10**9, "batch": 5000},
        ).fetchone()
        jit_above = conn.execute("SELECT current_setting('jit_above_cost')::float").fetchone()
    assert plan is not None and jit_above is not None
    assert plan[0][0]["Plan"]["Total Cost"] < jit_above[0], plan[0][0]["Plan"]


def insert_jobs(conn: Any, args: list[dict[str, Any]]) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'default', 'demo.noop', a FROM unnest(%s::jsonb[]) a RETURNING id",
            ([json.dumps(a) for a in args],),
        ).fetchall()
    ]


def test_the_pass_copies_the_redacted_text_and_advances_the_cursor(db_url: str) -> None:
    """A defer writes no search row; the pass copies the redacted values only (nested
    and dashed keys too) and moves the cursor past them; a status change leaves the row
    alone; a deleted job takes its row with it."""
    args = [
        {"story": "story 9812", "api_token": "zebra-secret", "n": 2.5},
        {"deep": {"X-Auth-Header": ["zebra-secret"], "list": [{"pwd": 1}, "ok"]}},
        {"plain": "nothing secret"},
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = insert_jobs(conn, args)
        side = "SELECT job_id, args_text FROM jobsys_job_search WHERE job_id = ANY(%s)"
        assert conn.execute(side, (ids,)).fetchall() == []  # nothing at insert time
        assert cursor_of(db_url) < ids[0]
        assert index_until(db_url, ids[-1]) == ids[-1]
        texts = dict(conn.execute(side, (ids,)).fetchall())
        assert [sorted(texts[i].split("\n")) for i in ids] == [
            ["2.5", "[REDACTED]", "story 9812"],
            ["[REDACTED]", "[REDACTED]", "ok"],
            ["nothing secret"],
        ]
        every = conn.execute("SELECT string_agg(args_text, ' ') FROM jobsys_job_search").fetchone()
        assert every is not None and "zebra" not in every[0]
        # a pass with nothing new copies nothing and keeps the cursor
        assert index_pass_sync(db_url).copied == 0
        assert cursor_of(db_url) == ids[-1]
        before = conn.execute(
            "SELECT xmin::text FROM jobsys_job_search WHERE job_id = %s", (ids[0],)
        ).fetchone()
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (ids[0],))
        after = conn.execute(
            "SELECT xmin::text FROM jobsys_job_search WHERE job_id = %s", (ids[0],)
        ).fetchone()
        assert before == after
        conn.execute("DELETE FROM procrastinate_jobs WHERE id = ANY(%s)", (ids[1:],))
        left = conn.execute(
            "SELECT job_id FROM jobsys_job_search WHERE job_id = ANY(%s)", (ids,)
        ).fetchall()
        assert left == [(ids[0],)]


def test_a_configured_redacted_key_is_redacted_in_the_side_table_too(
    db_url: str, settings: Any
) -> None:
    """A key the worker's ``redaction.keys`` adds (here ``Zebra-Key``) joins the state's
    keys and every text is written again: a secret copied before is gone."""
    from jobsys.config.application import load_config
    from jobsys.jobs.search_index import configured_keys

    assert "password" in configured_keys(load_config(settings))
    with psycopg.connect(db_url, autocommit=True) as conn:
        (job_id,) = insert_jobs(conn, [{"zebra_key": "s3cret-value", "story": "kept"}])
        index_until(db_url, job_id)
        text = "SELECT args_text FROM jobsys_job_search WHERE job_id = %s"
        assert "s3cret" in conn.execute(text, (job_id,)).fetchone()[0]
        index_pass_sync(db_url, keys=("zebra_key",))
        assert cursor_of(db_url) < job_id  # every text to be written again
        index_until(db_url, job_id, keys=("zebra_key",))
        assert sorted(conn.execute(text, (job_id,)).fetchone()[0].split("\n")) == [
            "[REDACTED]",
            "kept",
        ]
        keys = conn.execute("SELECT keys FROM jobsys_job_search_state").fetchone()[0]
        assert "zebra_key" in keys and "password" in keys
        # the same keys again: nothing to write again
        index_pass_sync(db_url, keys=("zebra_key",))
        assert cursor_of(db_url) >= job_id


def test_a_job_deferred_after_the_pass_is_found_in_the_tail(cli: Any, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        (old,) = insert_jobs(conn, [{"story": "story 9812 old"}])
        index_until(db_url, old)
        (new,) = insert_jobs(conn, [{"story": "story 9812 new"}])
    assert cursor_of(db_url) < new
    assert listed(cli, db_url, "--arg-contains", "story 9812") == [new, old]
    assert listed(cli, db_url, "--arg-contains", "new") == [new]


def test_the_cursor_never_passes_a_job_an_open_transaction_may_still_commit(
    cli: Any, db_url: str
) -> None:
    """An id is handed out before its job commits: the pass waits for that transaction
    rather than leave the job below the cursor without its search row."""
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        psycopg.connect(db_url) as slow,
    ):
        (late,) = insert_jobs(slow, [{"story": "late story"}])  # not committed yet
        (early,) = insert_jobs(conn, [{"story": "early story"}])
        assert late < early
        for _ in range(3):
            index_pass_sync(db_url)
        assert cursor_of(db_url) < late
        slow.commit()
        assert index_until(db_url, early) >= early
        found = conn.execute(
            "SELECT job_id FROM jobsys_job_search WHERE job_id = ANY(%s) ORDER BY job_id",
            ([late, early],),
        ).fetchall()
        assert found == [(late,), (early,)]
    assert listed(cli, db_url, "--arg-contains", "story") == [early, late]


def test_the_worker_runs_the_search_index_pass(db_url: str, settings: Any) -> None:
    """Every worker process runs one SearchIndexer; its pass runs on its own connection."""
    from jobsys.app import worker_services
    from jobsys.clock import now
    from jobsys.config.application import load_config
    from jobsys.jobs.search_index import SearchIndexer
    from jobsys.lanes.execution import build_engine_app

    indexers = [s for s in worker_services(load_config(settings)) if isinstance(s, SearchIndexer)]
    assert len(indexers) == 1
    with psycopg.connect(db_url, autocommit=True) as conn:
        (job_id,) = insert_jobs(conn, [{"story": "through the worker"}])

    async def passes() -> int:
        app = build_engine_app(db_url)
        async with app.open_async():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await indexers[0].run_pass(app, now())
                if cursor_of(db_url) >= job_id:
                    break
                await asyncio.sleep(0.05)
        await indexers[0].close()
        return cursor_of(db_url)

    assert asyncio.run(passes()) >= job_id


def test_a_secret_value_is_not_found_even_when_the_side_text_is_stale(
    cli: Any, db_url: str
) -> None:
    """The database's candidates are re-checked on the redacted args: a row of the side
    table cannot make a job match by a secret."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        (job_id,) = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES "
            "('default', 'demo.noop', '{\"api_token\": \"zebra-secret\"}') RETURNING id"
        ).fetchone()
        index_until(db_url, job_id)
        conn.execute(
            "UPDATE jobsys_job_search SET args_text = 'zebra-secret' || chr(10) || '[REDACTED]' "
            "WHERE job_id = %s",
            (job_id,),
        )
    assert listed(cli, db_url, "--arg-contains", "zebra") == []
    # Nor by the side text's marker of a secret: a redacted value is never searched.
    assert listed(cli, db_url, "--arg-contains", "redacted") == []


def redaction_config(tmp_path: Any, old: str, new: str) -> dict[str, str]:
    """The environment of a copy of the shipped config/ whose queues.yaml has ``old``
    (its redaction section's text) replaced by ``new``."""
    import shutil

    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    queues = config / "queues.yaml"
    text = queues.read_text()
    assert old in text
    queues.write_text(text.replace(old, new))
    return {"JOBSYS_CONFIG_DIR": str(config)}


def found_by(cli: Any, db_url: str, env: dict[str, str], text: str) -> list[int]:
    """``jobs list --arg-contains text`` ids with the configuration of ``env``."""
    result = cli("--database-url", db_url, "jobs", "list", "--arg-contains", text, "--json",
                 env=env)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return [j["id"] for j in result.json()["items"]]


@pytest.mark.parametrize("replacement", ["<hidden by ops>", "[REDACTED]"])
def test_neither_a_secret_nor_its_replacement_is_found_indexed_or_not(
    cli: Any, db_url: str, tmp_path: Any, replacement: str
) -> None:
    """A redacted value is never searched (README, "Searching job args"): not its
    secret, not what ``jobs list`` shows in its place (``redaction.replacement``),
    whether the job is indexed yet or not. Before, ``redacted`` found a job with a
    secret only once the pass had copied it (the side text marks a secret with the
    literal ``[REDACTED]``, and the re-check ran on the args redacted with the
    configured replacement, which then matched with the default one), and never before
    (row by row the database reads the raw args)."""
    env = redaction_config(
        tmp_path, 'replacement: "[REDACTED]"', f"replacement: {json.dumps(replacement)}"
    )

    def found(text: str) -> list[int]:
        return found_by(cli, db_url, env, text)

    with psycopg.connect(db_url, autocommit=True) as conn:
        (secret, plain) = insert_jobs(
            conn, [{"api_token": "zebra-secret", "story": "s1"}, {"story": "s2 redacted"}]
        )
    shown = cli("--database-url", db_url, "jobs", "show", str(secret), "--json", env=env)
    assert shown.json()["args"]["api_token"] == replacement
    expected = {
        "hidden": [],
        "HIDDEN BY": [],
        "[REDACTED]": [],
        "zebra": [],
        "redacted": [plain],
        "s1": [secret],
        "s": [plain, secret],
    }
    assert cursor_of(db_url) < secret
    before = {needle: found(needle) for needle in expected}  # row by row
    index_until(db_url, plain)
    after = {needle: found(needle) for needle in expected}  # through the index
    assert before == expected
    assert after == expected


def test_a_reader_that_shows_a_value_the_side_text_hides_still_finds_it(
    cli: Any, db_url: str, tmp_path: Any
) -> None:
    """A configuration whose ``redaction.keys`` replaced the defaults shows a
    ``password`` value in clear, and ``--arg-contains`` finds it: before the pass
    copies the job (row by row) and after (the side text holds the marker there, so
    the reader does not use the index). Before, the job was lost once indexed."""
    defaults = (
        "keys: [password, passwd, pwd, secret, token, cookie, session, authorization, auth,"
        "\n         api_key, apikey, private_key, credential, otp]"
    )
    env = redaction_config(tmp_path, defaults, "keys: [api_token]")

    def found(text: str) -> list[int]:
        return found_by(cli, db_url, env, text)

    with psycopg.connect(db_url, autocommit=True) as conn:
        (job_id,) = insert_jobs(conn, [{"password": "walrus-9", "api_token": "zebra-1"}])
    shown = cli("--database-url", db_url, "jobs", "show", str(job_id), "--json", env=env)
    assert shown.json()["args"]["password"] == "walrus-9"
    assert (found("walrus"), found("zebra")) == ([job_id], [])
    index_until(db_url, job_id)
    assert (found("walrus"), found("zebra")) == ([job_id], [])
    # With the default keys the index is used again (and both are hidden).
    env["JOBSYS_CONFIG_DIR"] = str(CONFIG_DIR)
    assert (found("walrus"), found("zebra")) == ([], [])
