"""Bulk actions by filter: ``jobs cancel --all``, ``jobs delete --all``, ``queues purge``:
dry runs, refusals, confirmation, audit rows, chunks, interruption and re-run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobsys.config.application import load_config
from jobsys.jobs.browser import JobFilters
from jobsys.jobs.bulk import BulkRequest, bulk_action
from jobsys.settings import Settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def sql(db_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def add_jobs(
    db_url: str, count: int, *, queue: str = "default", status: str = "todo",
    args: dict[str, Any] | None = None, scheduled_in: str | None = None, old: bool = False,
) -> list[int]:  # fmt: skip
    rows = sql(
        db_url,
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at) "
        "SELECT %s, 'demo.noop', %s::jsonb, %s::procrastinate_job_status, "
        "now() + %s::interval FROM generate_series(1, %s) RETURNING id",
        (queue, json.dumps(args or {}), status, scheduled_in, count),
    )
    ids = [int(r[0]) for r in rows]
    if status != "todo":  # Procrastinate's insert trigger records 'deferred' for todo only
        sql(
            db_url,
            "INSERT INTO procrastinate_events (job_id, type) "
            "SELECT unnest(%s::bigint[]), 'deferred'",
            (ids,),
        )
    if old:
        sql(
            db_url,
            "UPDATE procrastinate_events SET at = now() - interval '10 days' "
            "WHERE job_id = ANY(%s)",
            (ids,),
        )
    return ids


def ids_where(db_url: str, condition: str) -> set[int]:
    return {int(r[0]) for r in sql(db_url, f"SELECT id FROM procrastinate_jobs WHERE {condition}")}


def status_of(db_url: str, ids: list[int]) -> set[str]:
    query = "SELECT status::text FROM procrastinate_jobs WHERE id = ANY(%s)"
    return {str(r[0]) for r in sql(db_url, query, (ids,))}


def statuses(db_url: str) -> dict[str, int]:
    return dict(
        sql(db_url, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")  # type: ignore[arg-type]
    )


def table_hash(db_url: str) -> str:
    return str(
        sql(
            db_url,
            "SELECT md5(coalesce(string_agg(j::text, ',' ORDER BY id), '')) "
            "FROM procrastinate_jobs j",
        )[0][0]
    )


def audits(db_url: str) -> list[tuple[Any, ...]]:
    return sql(
        db_url,
        "SELECT action, actor, filters, matched, counts, status FROM jobsys_bulk_actions "
        "ORDER BY id",
    )


def test_dry_run_counts_and_samples_and_changes_nothing(cli: Any, db_url: str) -> None:
    add_jobs(db_url, 30, args={"account_id": 42})
    add_jobs(db_url, 5, args={"account_id": 42}, scheduled_in="1 hour")
    add_jobs(db_url, 4, args={"account_id": 42}, status="doing")
    add_jobs(db_url, 7, args={"account_id": 7})
    before = table_hash(db_url)
    result = cli(
        "--database-url", db_url, "jobs", "cancel", "--all", "--arg", "account_id=42",
        "--dry-run", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["matched"] == {"waiting": 30, "scheduled": 5}
    assert report["total"] == 35 and report["dry_run"] is True and report["audit_id"] is None
    assert len(report["sample"]) == 10
    assert {j["args"]["account_id"] for j in report["sample"]} == {42}
    assert table_hash(db_url) == before and audits(db_url) == []
    # the human form names the running ones left alone
    text = cli("--database-url", db_url, "jobs", "cancel", "--all", "--arg", "account_id=42",
               "--status", "todo", "--dry-run")  # fmt: skip
    assert text.exit_code == 0 and "dry run: nothing was changed" in text.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("jobs", "cancel", "--all"), "filters (--queue, --task, --status, --arg...) or"),
        (("jobs", "delete", "--all"), "filters (--queue, --task, --status, --arg, --before...)"),
        (("jobs", "cancel", "--all", "--status", "running"), "--abort-running"),
        (("jobs", "cancel", "--all", "--status", "succeeded"), "a bulk cancel takes"),
        (("jobs", "delete", "--all", "--status", "todo"), "only finished jobs can be deleted"),
        (("jobs", "delete", "--all", "--status", "doing"), "only finished jobs can be deleted"),
        # a refused status as typed (it said '--status doing' to who typed 'running')
        (("jobs", "delete", "--all", "--status", "running"), "--status running (doing): only"),
        (("jobs", "cancel", "--all", "--status", "running"), "--status running (doing): a bulk"),
        (("jobs", "delete", "--all", "--before", "2999-01-01"), "is in the future"),
        (("jobs", "delete", "--all", "--before", "soon"), "--before"),
        (("jobs", "cancel", "--all", "--arg", "account_id"), "give KEY=VALUE"),
        (("jobs", "cancel", "--all", "--arg", "a..b=1"), "is not a key path"),
        (("jobs", "cancel", "--all", "--arg", "api_token=x"), "redacted argument"),
        (("jobs", "delete", "--all", "--arg-contains", " "), "--arg-contains must not be empty"),
        (("jobs", "cancel", "--all", "--arg-contains", ""), "--arg-contains must not be empty"),
        (("jobs", "cancel", "3", "--all"), "not both"),
        (("jobs", "delete", "--status", "failed"), "give --all"),
        (("queues", "purge", "nope"), "unknown queue"),
    ],
)
def test_bad_requests_exit_2_and_change_nothing(
    cli: Any, db_url: str, args: tuple[str, ...], says: str
) -> None:
    add_jobs(db_url, 5)
    add_jobs(db_url, 5, status="succeeded", old=True)
    before = table_hash(db_url)
    result = cli("--database-url", db_url, *args, "--yes")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert says in result.stderr and "Traceback" not in result.stderr
    assert table_hash(db_url) == before and audits(db_url) == []


def test_cancel_all_by_filter_counts_equal_the_table_and_leaves_running_alone(
    cli: Any, db_url: str
) -> None:
    doomed = add_jobs(db_url, 2500, args={"account_id": 42})
    later = add_jobs(db_url, 20, args={"account_id": 42}, scheduled_in="1 day")
    running = add_jobs(db_url, 3, args={"account_id": 42}, status="doing")
    others = add_jobs(db_url, 40, args={"account_id": 7})
    result = cli(
        "--database-url", db_url, "jobs", "cancel", "--all", "--arg", "account_id=42",
        "--yes", "--json", "--chunk-size", "700",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["done"] == {"cancelled": len(doomed) + len(later)}
    cancelled = {
        r[0] for r in sql(db_url, "SELECT id FROM procrastinate_jobs WHERE status = 'cancelled'")
    }
    assert cancelled == set(doomed + later)
    assert {
        r[0]
        for r in sql(
            db_url, "SELECT status::text FROM procrastinate_jobs WHERE id = ANY(%s)", (running,)
        )
    } == {"doing"}
    assert {
        r[0]
        for r in sql(
            db_url, "SELECT status::text FROM procrastinate_jobs WHERE id = ANY(%s)", (others,)
        )
    } == {"todo"}
    # Procrastinate's triggers recorded each cancellation as an event
    assert sql(db_url, "SELECT count(*) FROM procrastinate_events WHERE type = 'cancelled'")[0][
        0
    ] == len(cancelled)
    [(action, actor, filters, matched, counts, status)] = audits(db_url)
    assert (action, matched, counts, status) == (
        "jobs_cancel",
        2520,
        {"cancelled": 2520},
        "finished",
    )
    assert filters == {"args": ["account_id=42"]} and actor
    # --abort-running: the running ones are asked to abort, not cancelled
    result = cli(
        "--database-url", db_url, "jobs", "cancel", "--all", "--arg", "account_id=42",
        "--abort-running", "--yes", "--json",
    )  # fmt: skip
    assert result.json()["done"] == {"cancelled": 0, "abort_requested": 3}
    assert status_of(db_url, running) == {"doing"}
    assert ids_where(db_url, "abort_requested") == set(running)


def test_confirmation_is_asked_unless_yes(cli: Any, db_url: str) -> None:
    add_jobs(db_url, 12, queue="sync")
    before = table_hash(db_url)
    declined = cli("--database-url", db_url, "queues", "purge", "sync", input="n\n")
    assert declined.exit_code == 2 and "cancel 12 jobs?" in declined.stderr
    assert "not confirmed" in declined.stderr and table_hash(db_url) == before
    accepted = cli("--database-url", db_url, "queues", "purge", "sync", input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert "done: 12 cancelled" in accepted.stdout
    assert statuses(db_url) == {"cancelled": 12}
    assert [a[0] for a in audits(db_url)] == ["queues_purge"]


def test_delete_takes_only_old_finished_jobs_and_keeps_failures(cli: Any, db_url: str) -> None:
    old_done = add_jobs(db_url, 1500, status="succeeded", old=True)
    old_failed = add_jobs(db_url, 10, status="failed", old=True)
    recent_done = add_jobs(db_url, 10, status="succeeded")
    waiting_old = add_jobs(db_url, 10, old=True)
    sql(
        db_url,
        "INSERT INTO jobsys_failures (job_id, task, queue, attempt, error_class, message, kind, "
        "retryable) SELECT unnest(%s::bigint[]), 'demo.noop', 'default', 1, 'E', 'm', "
        "'runtime', true",
        (old_failed,),
    )
    result = cli(
        "--database-url", db_url, "jobs", "delete", "--all", "--before", "7d", "--yes",
        "--json", "--chunk-size", "400",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["done"] == {"deleted": len(old_done) + len(old_failed)}
    left = {r[0] for r in sql(db_url, "SELECT id FROM procrastinate_jobs")}
    assert left == set(recent_done + waiting_old)
    events = "SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(%s)"
    assert sql(db_url, events, (old_done,))[0][0] == 0
    assert sql(db_url, "SELECT count(*) FROM jobsys_failures")[0][0] == len(old_failed)


def test_arg_contains_never_acts_on_a_secret_match(cli: Any, db_url: str) -> None:
    plain = add_jobs(db_url, 3, args={"note": "story 9812"})
    secret = add_jobs(db_url, 3, args={"api_token": "story 9812"})
    result = cli("--database-url", db_url, "jobs", "cancel", "--all", "--arg-contains",
                 "STORY 98", "--yes", "--json")  # fmt: skip
    assert result.json()["done"] == {"cancelled": 3}
    assert ids_where(db_url, "status = 'cancelled'") == set(plain)
    assert secret


def test_interrupted_then_rerun_finishes_the_rest(db_url: str, tmp_path: Path) -> None:
    add_jobs(db_url, 1000, queue="sync")
    settings = Settings(
        database_url=db_url, home=tmp_path / "home", config_dir=CONFIG_DIR, operator="tester"
    )
    config = load_config(settings)
    request = BulkRequest(action="queues_purge", filters=JobFilters(queues=("sync",)), chunk=150)
    chunks: list[int] = []

    def stop_after_three(done: int, total: int) -> None:
        chunks.append(done)
        if len(chunks) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(bulk_action(settings, config, request, progress=stop_after_three))
    assert statuses(db_url) == {"cancelled": 450, "todo": 550}
    # the audit row says what the interrupted run did
    [(_, actor, _, matched, counts, status)] = audits(db_url)
    assert (actor, matched, counts, status) == ("tester", 1000, {"cancelled": 450}, "running")
    report = asyncio.run(bulk_action(settings, config, request))
    assert report["done"] == {"cancelled": 550} and report["total"] == 550
    assert statuses(db_url) == {"cancelled": 1000}


def test_delete_waits_for_a_finished_job_another_transaction_holds(
    db_url: str, tmp_path: Path
) -> None:
    """A finished job whose row is key-share locked (the search-index pass copies it)
    is deleted once the lock goes, not passed over: SKIP LOCKED left it in place while
    the report said every matched job was deleted (found re-reading the session's
    change, by holding FOR KEY SHARE on one job during `jobs delete --all`)."""
    done = add_jobs(db_url, 5, status="succeeded", old=True)
    held = done[2]
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT id FROM procrastinate_jobs WHERE id = %s FOR KEY SHARE", (held,))
        loop = asyncio.new_event_loop()
        try:
            request = BulkRequest(action="jobs_delete", before="7d")
            settings = Settings(database_url=db_url, home=tmp_path / "home", config_dir=CONFIG_DIR)
            config = load_config(settings)
            running = loop.create_task(bulk_action(settings, config, request))
            # The delete reaches the held row and waits for it (0.3 s here; it gives up
            # only after CHUNK_LOCK_ATTEMPTS lock timeouts of 1 s).
            loop.run_until_complete(asyncio.sleep(0.3))
            assert not running.done()
            holder.commit()
            report = loop.run_until_complete(running)
        finally:
            loop.close()
    assert report["done"] == {"deleted": 5}
    assert ids_where(db_url, f"id = ANY(ARRAY{done})") == set()


def test_delete_stops_readably_when_a_row_stays_locked(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobsys.errors import RefusedError
    from jobsys.jobs import bulk

    done = add_jobs(db_url, 3, status="succeeded", old=True)
    monkeypatch.setattr(bulk, "CHUNK_LOCK_ATTEMPTS", 1)
    settings = Settings(database_url=db_url, home=tmp_path / "home", config_dir=CONFIG_DIR)
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT id FROM procrastinate_jobs WHERE id = %s FOR KEY SHARE", (done[1],))
        request = BulkRequest(action="jobs_delete", before="7d", chunk=1)
        with pytest.raises(RefusedError, match=r"stayed locked .* stopped after 1 deleted"):
            asyncio.run(bulk_action(settings, load_config(settings), request))
    assert ids_where(db_url, f"id = ANY(ARRAY{done})") == set(done[1:])


def test_a_misspelt_arg_key_gets_a_note_not_a_silent_zero(
    cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--arg acount_id=42` matched nothing and said only "0 jobs to cancel", exit 0:
    at 3 a.m. that reads as "already done". Now a note names the key no task takes."""
    from jobsys import tasks as task_registry

    # The registry is the process's: tasks other test modules declare with **kwargs
    # (which rightly silence the note) are not this application's.
    monkeypatch.setattr(
        task_registry,
        "_REGISTRY",
        {
            name: spec
            for name, spec in task_registry.registry().items()
            if spec.parameters is not None
            and (name.startswith("jobsys.") or not spec.parameters.any_name)
        },
    )
    add_jobs(db_url, 3, args={"account_id": 42})
    note = (
        "note: --arg 'acount_id=42': no task takes an argument 'acount_id' (did you mean "
        "'account_id'"
    )
    url = ("--database-url", db_url)
    result = cli(*url, "jobs", "cancel", "--all", "--arg", "acount_id=42", "--dry-run", "--json")
    assert result.exit_code == 0 and result.json()["total"] == 0
    assert note in " ".join(result.stderr.split()), result.stderr
    listed = cli(*url, "jobs", "list", "--arg", "acount_id=42", "--json").json()
    assert listed["items"] == [] and "'acount_id'" in listed["notes"][0]
    right = cli(*url, "jobs", "cancel", "--all", "--arg", "account_id=42", "--dry-run")
    assert right.exit_code == 0 and "note:" not in right.stderr and "3 jobs" in right.stdout
