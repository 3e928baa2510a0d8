"""Every command with --json: one JSON document on stdout; every list in one envelope
(``items``, ``count``, ``total``, ``notes``); times as ISO-8601 UTC with a Z."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import typer.main
from _retry_support import bulk_failed_jobs, make_issue

from jobsys.cli.main import app

LISTS = {
    ("queues",),
    ("queues", "list"),
    ("schedule", "list"),
    ("fanout", "list"),
    ("pipelines", "list"),
    ("jobs", "list"),
    ("failures", "list"),
    ("issues", "list"),
    ("workers", "list"),
    ("workers",),
}
# Reads of one thing or one state: a JSON object (ids filled in by the test).
READS = {
    ("db", "status"): [],
    ("db", "current"): [],
    ("db", "check"): [],
    ("config", "check"): [],
    ("config", "show"): [],
    ("schedule", "check"): [],
    ("fanout", "show"): ["{run}"],
    ("pipelines", "show"): ["{pipeline}"],
    ("jobs", "show"): ["{job}"],
    ("failures", "show"): ["{failure}"],
    ("issues", "show"): ["{issue}"],
    ("workers", "show"): ["{worker}"],
    ("dashboard",): ["--once"],
    ("top",): ["--once"],
}
# Commands that change something or stream: their JSON is tested with the command.
ACTIONS = {
    ("retry",),
    ("events",),
    ("defer",),
    ("db", "start"),
    ("db", "stop"),
    ("db", "upgrade"),
    ("db", "downgrade"),
    ("systemd", "render"),
    ("schedule", "run"),
    ("schedule", "pause"),
    ("schedule", "resume"),
    ("pipelines", "cancel"),
    ("jobs", "cancel"),
    ("jobs", "retry"),
    ("issues", "resolve"),
    ("issues", "mute"),
    ("issues", "reopen"),
    ("issues", "retry"),
    ("queues", "pause"),
    ("queues", "resume"),
    ("queues", "purge"),
    ("jobs", "delete"),
    ("demo", "seed"),
}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ENVELOPE = {"items", "count", "total", "notes"}


def json_commands() -> set[tuple[str, ...]]:
    def walk(command: Any, path: tuple[str, ...]) -> Any:
        if hasattr(command, "commands"):
            if path and any("--json" in p.opts for p in command.params):
                yield path  # a group that lists when called alone (queues, workers)
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        elif any("--json" in p.opts for p in command.params):
            yield path

    return set(walk(typer.main.get_command(app), ()))


def test_every_json_command_is_covered_here() -> None:
    assert json_commands() == LISTS | set(READS) | ACTIONS


def _times_are_iso(value: Any, where: str) -> None:
    """Every time is ISO-8601 UTC with a Z, and every time's key says it is one
    (``*_at``, or ``first_seen``/``last_seen``): ``next_run`` was a time, ``at`` too."""
    if isinstance(value, dict):
        for key, inner in value.items():
            named = key.endswith("_at") or key in ("first_seen", "last_seen")
            if named and isinstance(inner, str):
                assert ISO_Z.match(inner), (where, key, inner)
            if isinstance(inner, str) and ISO_Z.match(inner):
                assert named, (where, key, "a time under a key that does not say so")
            _times_are_iso(inner, where)
    elif isinstance(value, list):
        for inner in value:
            _times_are_iso(inner, where)


def one_of_each(db_url: str) -> dict[str, Any]:
    """An issue, failures, a job, a pipeline, a fan-out run and a worker: their ids."""
    issue = make_issue(db_url)
    failure = bulk_failed_jobs(db_url, 3, issue_id=issue)[0]
    with psycopg.connect(db_url, autocommit=True) as conn:
        job = conn.execute("SELECT job_id FROM jobsys_failures WHERE id = %s", (failure,))
        job_id = job.fetchone()[0]  # type: ignore[index]
        pipeline = conn.execute(
            "INSERT INTO jobsys_pipelines (name, entity) VALUES ('p', 'e:1') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("CREATE TABLE demo_accounts (id bigint PRIMARY KEY, active boolean)")
        run = conn.execute(
            "INSERT INTO jobsys_fanout_runs (entry, source, task, queue, batch_size, spec) "
            "VALUES ('purge', 'demo_accounts.id', 'demo.process_account', 'sync', 10, "
            """'{"table": "demo_accounts", "id_column": "id", "item_arg": "account_id"}') """
            "RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes, concurrency, "
            "status, started_at, last_heartbeat) VALUES ('hostA:4242:x', 'hostA', 4242, "
            """ARRAY['base'], '{"base": 2}', 'running', now(), now())"""
        )
    ids = {"run": run, "pipeline": pipeline, "job": job_id, "failure": failure, "issue": issue}
    ids["worker"] = "hostA:4242"
    return ids


def test_every_read_prints_one_document_and_lists_share_one_envelope(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    ids = one_of_each(db_url)
    for path in sorted(LISTS):
        result = cli("--database-url", db_url, *path, "--json")
        assert result.exit_code == 0, (path, result.stderr)
        doc = json.loads(result.stdout)
        assert set(doc) >= ENVELOPE, path
        assert doc["count"] == len(doc["items"]), path
        assert doc["total"] is None or doc["total"] >= doc["count"], path
        assert all(isinstance(n, str) for n in doc["notes"]), path
        _times_are_iso(doc["items"], " ".join(path))
    for path, extra in READS.items():
        args = [a.format(**ids) for a in extra]
        result = cli("--database-url", db_url, *path, *args, "--json")
        # a check that finds problems (the demo's table is missing here) exits 2
        assert result.exit_code in ((0, 2) if path[-1] == "check" else (0,)), (path, result)
        doc = json.loads(result.stdout)  # exactly one document: json.loads refuses two
        assert isinstance(doc, dict), path
        _times_are_iso(doc, " ".join(path))


def test_the_same_thing_has_the_same_key_everywhere(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    issue = make_issue(db_url)
    bulk_failed_jobs(db_url, 2, issue_id=issue)
    url = ("--database-url", db_url)
    failure = cli(*url, "failures", "list", "--json").json()["items"][0]
    job = cli(*url, "jobs", "list", "--json").json()["items"][0]
    issue_row = cli(*url, "issues", "list", "--json").json()["items"][0]
    queue = cli(*url, "queues", "--json").json()["items"][0]
    entry = cli(*url, "schedule", "list", "--json").json()["items"][0]
    assert {"id", "task", "queue", "lane", "job_id", "issue_id", "account_id"} <= set(failure)
    assert {"id", "task", "queue", "lane", "status"} <= set(job)
    assert {"id", "task", "queue", "status", "kind"} <= set(issue_row)
    assert {"queue", "lane"} <= set(queue)
    assert {"name", "task", "queue"} <= set(entry)
    # how many failures and accounts: `occurrences` and `affected_accounts` for an issue
    # and for a group of failures alike (`count` is the envelope's: rows printed)
    counted = {"occurrences", "affected_accounts", "last_seen"}
    assert counted <= set(issue_row)
    for group_by in ("fingerprint", "task", "issue"):
        groups = cli(*url, "failures", "list", "--group-by", group_by, "--json").json()
        assert groups["items"] and all(counted <= set(g) for g in groups["items"]), group_by
        assert not {"count", "accounts"} & {k for g in groups["items"] for k in g}, group_by
    # a schedule entry: the same keys in `schedule list` and the dashboard's next runs
    dashboard = cli(*url, "dashboard", "--once", "--json").json()
    [soonest, *_] = dashboard["schedule"]["next_runs"]
    entries = cli(*url, "schedule", "list", "--json").json()["items"]
    [same] = [e for e in entries if e["name"] == soonest["name"]]
    shared = {"name", "task", "cron", "paused", "next_run_at"}
    assert shared <= set(same) and shared <= set(soonest)
    assert dashboard["open_issues"]["latest"][0].keys() & counted == counted


SHOWS = [p for p in READS if p[-1] == "show" and p[0] != "config"] + [("db", "status")]
ISO_ANYWHERE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+")
HUMAN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((now|\d+[smhd] ago)\)")


def test_every_show_prints_human_times_without_trailing_spaces(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """``show`` without --json: times as ``2026-12-05 19:13:00 UTC (3m ago)``, never
    ISO with microseconds; no line ends in padding."""
    ids = one_of_each(db_url)
    for path in SHOWS:
        args = [a.format(**ids) for a in READS.get(path, [])]
        result = cli("--database-url", db_url, *path, *args)
        assert result.exit_code == 0, (path, result)
        assert not ISO_ANYWHERE.search(result.stdout), (path, result.stdout)
        assert all(line == line.rstrip() for line in result.stdout.splitlines()), path
        if path != ("db", "status"):
            assert HUMAN_TIME.search(result.stdout), (path, result.stdout)
