"""``jobsys queues pause|resume``: kept in the database, recorded, honoured by the
claim itself (a worker that never heard the NOTIFY still takes nothing), ending by
itself with ``--for``, and serialised when operators act at once."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from typing import Any

import psycopg
import pytest
from rt_support import query, wait_until

from jobsys.flow import store as flow_store
from jobsys.lanes import store


def jobs_in(db_url: str, *queues: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for queue in queues:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES (%s, 't', '{}')",
                (queue,),
            )


def claim(db_url: str, queues: list[str], limit: int = 100) -> list[str]:
    """The queues of the jobs a lane's claim takes now (then put back)."""

    async def go() -> list[str]:
        from jobsys.engine import manager
        from jobsys.lanes.execution import build_engine_app

        app = build_engine_app(db_url, max_size=2)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            rows = await manager.claim_jobs(app.connector, queues, worker_id, limit)
        query(db_url, "UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL")
        return sorted(r["queue_name"] for r in rows)

    return asyncio.run(go())


def events(db_url: str) -> list[tuple[Any, ...]]:
    return query(
        db_url,
        "SELECT queue, action, actor, reason, target, was_paused, until IS NOT NULL "
        "FROM jobsys_queue_pause_events ORDER BY id",
    )


def test_pause_a_queue_then_resume_it(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    env = {"JOBSYS_OPERATOR": "alice"}
    paused = cli(
        "--database-url", db_url, "queues", "pause", "story_downloads",
        "--reason", "upstream 429", "--for", "30m", "--json", env=env,
    )  # fmt: skip
    assert paused.exit_code == 0, paused.stderr
    result = paused.json()
    assert (result["changed"], result["unchanged"], result["by"]) == (
        ["story_downloads"],
        [],
        "alice",
    )
    rows = {
        r["queue"]: r for r in cli("--database-url", db_url, "queues", "--json").json()["items"]
    }
    pause = rows["story_downloads"]["pause"]
    assert (pause["paused_by"], pause["reason"], pause["target"]) == (
        "alice",
        "upstream 429",
        "story_downloads",
    )
    assert re.fullmatch(
        r"queue paused \ds ago by alice: upstream 429 \(resumes in (30|29)m\)", pause["why"]
    )
    assert pause["until"] > pause["paused_at"]
    assert all(r["pause"] is None for q, r in rows.items() if q != "story_downloads")
    table = cli("--database-url", db_url, "queues")
    assert "by alice: upstream 429" in table.stdout

    resumed = cli("--database-url", db_url, "queues", "resume", "story_downloads", env=env)
    assert resumed.exit_code == 0 and "resumed story_downloads" in resumed.stderr
    again = cli("--database-url", db_url, "queues", "resume", "story_downloads", env=env)
    assert "story_downloads: was not paused" in again.stderr
    assert all(
        r["pause"] is None
        for r in cli("--database-url", db_url, "queues", "--json").json()["items"]
    )
    assert events(db_url) == [
        ("story_downloads", "pause", "alice", "upstream 429", "story_downloads", False, True),
        ("story_downloads", "resume", "alice", None, "story_downloads", True, False),
        ("story_downloads", "resume", "alice", None, "story_downloads", False, False),
    ]


def test_pausing_a_lane_pauses_each_of_its_queues(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "queues", "pause", "base", "--json")
    assert result.exit_code == 0, result.stderr
    base = ["sync", "engagements", "story_downloads", "post_downloads", "profiles",
            "messages", "avatars", "maintenance", "default"]  # fmt: skip
    assert result.json()["queues"] == base
    rows = {
        r["queue"]: r for r in cli("--database-url", db_url, "queues", "--json").json()["items"]
    }
    assert sorted(q for q, r in rows.items() if r["pause"]) == sorted(base)
    assert "(lane base)" in rows["sync"]["pause"]["why"]
    # One queue of the lane can be resumed on its own.
    assert cli("--database-url", db_url, "queues", "resume", "sync").exit_code == 0
    rows = {
        r["queue"]: r for r in cli("--database-url", db_url, "queues", "--json").json()["items"]
    }
    assert sorted(q for q, r in rows.items() if r["pause"]) == sorted(set(base) - {"sync"})


def test_queues_list_is_queues_alone(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """Every other listing is `jobsys X list`; `queues list` said "No such command"."""
    cli("--database-url", db_url, "queues", "pause", "sync", "--reason", "upstream 429")
    alone = cli("--database-url", db_url, "queues", "--json")
    listed = cli("--database-url", db_url, "queues", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [(r["queue"], r["lane"], bool(r["pause"])) for r in listed.json()["items"]] == [
        (r["queue"], r["lane"], bool(r["pause"])) for r in alone.json()["items"]
    ]
    table = cli("--database-url", db_url, "queues", "list", "--wide")
    assert table.exit_code == 0, table.stderr
    assert "upstream 429" in table.stdout and "story_downloads" in table.stdout


def test_unknown_names_are_refused_with_a_suggestion(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "queues", "pause", "sycn")
    assert result.exit_code == 2
    assert "unknown queue or lane 'sycn' (did you mean 'sync'" in result.stderr
    assert "Traceback" not in result.stderr
    assert cli("--database-url", db_url, "queues", "resume", "ai_fase_queue").exit_code == 2
    assert cli("--database-url", db_url, "queues", "pause").exit_code == 2
    assert cli("--database-url", db_url, "queues", "pause", "sync", "--for", "soon").exit_code == 2
    assert cli("--database-url", db_url, "queues", "pause", "sync", "--for", "0s").exit_code == 2
    assert query(db_url, "SELECT count(*) FROM jobsys_queue_pause_events") == [(0,)]


def test_pause_all_asks_first(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    refused = cli("--database-url", db_url, "queues", "pause", "--all", input="n\n")
    assert refused.exit_code != 0
    assert "Pause all 16 queues of 8 lanes?" in refused.stderr
    assert query(db_url, "SELECT count(*) FROM jobsys_queue_pauses") == [(0,)]
    both = cli("--database-url", db_url, "queues", "pause", "sync", "--all", "--yes")
    assert both.exit_code == 2
    done = cli("--database-url", db_url, "queues", "pause", "--all", "--yes", "--reason", "stop")
    assert done.exit_code == 0, done.stderr
    assert query(db_url, "SELECT count(*), min(target) FROM jobsys_queue_pauses") == [(16, "--all")]
    rows = cli("--database-url", db_url, "queues", "--json").json()["items"]
    assert all("(all queues): stop" in r["pause"]["why"] for r in rows)
    assert cli("--database-url", db_url, "queues", "resume", "--all").exit_code == 0
    assert query(db_url, "SELECT count(*) FROM jobsys_queue_pauses") == [(0,)]


def test_the_claim_skips_paused_queues_and_expired_pauses_end(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    jobs_in(db_url, "sync", "sync", "default")
    assert claim(db_url, ["sync", "default"]) == ["default", "sync", "sync"]
    # Nothing but the table: this is what a worker that missed the NOTIFY sees.
    assert cli("--database-url", db_url, "queues", "pause", "sync", "--for", "1s").exit_code == 0
    assert claim(db_url, ["sync", "default"]) == ["default"]
    wait_until(lambda: claim(db_url, ["sync", "default"]) == ["default", "sync", "sync"], 5,
               "the pause to end by itself")  # fmt: skip
    assert cli("--database-url", db_url, "queues", "--json").json()["items"][0]["pause"] is None
    # Waiting jobs stayed waiting, untouched.
    assert query(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == [(3,)]


def test_a_drain_does_not_wait_for_a_paused_queue(db_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    jobs_in(db_url, "sync")

    async def waiting() -> int:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return (await store.drain_state(conn, ["sync"], []))[0]

    assert asyncio.run(waiting()) == 1
    assert cli("--database-url", db_url, "queues", "pause", "sync").exit_code == 0
    assert asyncio.run(waiting()) == 0


def test_pause_and_resume_announce_themselves(db_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    heard: list[dict[str, Any]] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {flow_store.CHANNEL}")
        assert cli("--database-url", db_url, "queues", "pause", "base").exit_code == 0
        assert cli("--database-url", db_url, "queues", "resume", "ai").exit_code == 0
        for notify in conn.notifies(timeout=2, stop_after=2):
            heard.append(json.loads(notify.payload))
    assert heard[0]["action"] == "pause" and "sync" in heard[0]["queues"]
    assert heard[1] == {"action": "resume", "queues": ["ai"]}


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_pauses_and_resumes_end_in_the_last_recorded_state(
    db_url: str, round_: int
) -> None:
    """Operators pausing and resuming one queue at once: every action is recorded, in
    the order they took effect, and the queue ends as the last one left it."""
    actions = [i % 2 == 0 for i in range(12)]  # pause, resume, pause, ...
    barrier = threading.Barrier(len(actions))
    errors: list[BaseException] = []

    def act(i: int, paused: bool) -> None:
        async def go() -> None:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                barrier.wait()
                await flow_store.set_paused(
                    conn, ["sync", "default"], paused=paused, actor=f"op{i}", target="sync"
                )

        try:
            asyncio.run(go())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=act, args=(i, p)) for i, p in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    for queue in ("sync", "default"):
        log = query(
            db_url,
            "SELECT action, was_paused FROM jobsys_queue_pause_events WHERE queue = %s ORDER BY id",
            (queue,),
        )
        assert len(log) == len(actions)
        # Each action saw the state the previous one left: a serial history.
        state = False
        for action, was_paused in log:
            assert was_paused == state, log
            state = action == "pause"
        paused_now = query(
            db_url, "SELECT count(*) FROM jobsys_queue_pauses WHERE queue = %s", (queue,)
        )[0][0]
        assert bool(paused_now) == state
    time.sleep(0)  # (keeps the parametrised rounds independent in output)


def test_a_pause_shows_in_metrics_and_the_dashboard(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    before = cli("--database-url", db_url, "top", "--once")
    assert before.exit_code == 0 and "PAUSED" not in before.stdout
    assert (
        'jobsys_queue_paused{lane="base",queue="story_downloads"} 0'
        in cli("--database-url", db_url, "metrics").stdout
    )
    env = {"JOBSYS_OPERATOR": "alice"}
    pause = ("--database-url", db_url, "queues", "pause")
    assert (
        cli(
            *pause, "story_downloads", "--reason", "upstream 429", "--for", "30m", env=env
        ).exit_code
        == 0
    )
    assert cli(*pause, "ai_face_queue", env=env).exit_code == 0

    metrics = cli("--database-url", db_url, "metrics").stdout
    assert 'jobsys_queue_paused{lane="base",queue="story_downloads"} 1' in metrics
    assert 'jobsys_queue_paused{lane="ai_face_queue",queue="ai_face_queue"} 1' in metrics
    assert 'jobsys_queue_paused{lane="base",queue="sync"} 0' in metrics

    data = cli("--database-url", db_url, "top", "--once", "--json").json()
    lanes = {lane["lane"]: lane for lane in data["lanes"]}
    assert lanes["base"]["paused_queues"] == ["story_downloads"]
    assert lanes["ai_face_queue"]["paused_queues"] == ["ai_face_queue"]
    assert lanes["ai"]["paused_queues"] == []
    assert [(p["queue"], p["paused_by"], p["reason"]) for p in data["pauses"]] == [
        ("ai_face_queue", "alice", None), ("story_downloads", "alice", "upstream 429")
    ]  # fmt: skip
    screen = cli("--database-url", db_url, "top", "--once").stdout
    assert "PAUSED" in screen
    assert (
        "story_downloads: paused" in screen and "by alice: upstream 429 (resumes in 29m" in screen
    )
    assert cli(*pause, "base", env=env).exit_code == 0
    assert "base (9 queues): paused" in cli("--database-url", db_url, "top", "--once").stdout


def test_jobs_show_says_why_a_job_waits(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    def because(job_id: int) -> str | None:
        result = cli("--database-url", db_url, "jobs", "show", str(job_id), "--json")
        assert result.exit_code == 0, result.stderr
        return result.json()["waiting_because"]  # type: ignore[no-any-return]

    defer = ("--database-url", db_url, "defer", "demo.refresh_profile", "--json")
    job = cli(*defer, "--args", '{"account_id": 1}').json()["job_id"]
    later = cli(*defer, "--args", '{"account_id": 2}', "--in", "1h").json()["job_id"]
    locked = cli(*defer, "--args", '{"account_id": 3}', "--lock", "acct3").json()["job_id"]
    assert because(job) == "no live worker runs lane base: start `jobsys worker --lane base`"
    query(db_url, "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes) "
                  "VALUES ('h:1', 'h', 1, '{base}')")  # fmt: skip
    assert because(job) == (
        "due; waiting for a free slot of lane base (0 running, 1 worker process(es) x 10)"
    )
    assert because(later).startswith("scheduled for ")
    holder = cli(*defer, "--args", '{"account_id": 3}', "--lock", "acct3").json()["job_id"]
    query(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (holder,))
    assert because(locked) == f"lock 'acct3' is held by running job {holder}"
    assert because(holder) is None  # running, not waiting

    env = {"JOBSYS_OPERATOR": "alice"}
    assert cli("--database-url", db_url, "queues", "pause", "profiles", "--reason", "AI outage",
               env=env).exit_code == 0  # fmt: skip
    assert re.fullmatch(r"queue paused \ds ago by alice: AI outage", because(job) or "")
    shown = cli("--database-url", db_url, "jobs", "show", str(job))
    assert re.search(r"waiting because +queue paused \ds ago by alice: AI outage", shown.stdout)


def test_pause_and_resume_work_while_only_the_schedule_is_broken(  # type: ignore[no-untyped-def]
    cli, db_url: str, tmp_path
) -> None:
    """The brake of an incident: a broken schedule.yaml on the host (a deploy half
    done) refused `queues pause` (exit 2) although pausing needs only queues.yaml. It
    runs now and warns; a broken queues.yaml still refuses."""
    import shutil
    from pathlib import Path

    config_dir = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", config_dir)
    with (config_dir / "schedule.yaml").open("a") as f:
        f.write("  broken: [\n")
    url = ("--database-url", db_url, "--config-dir", str(config_dir))
    paused = cli(*url, "queues", "pause", "story_downloads", "--for", "30m", "--json")
    assert paused.exit_code == 0, paused.stderr
    assert paused.json()["changed"] == ["story_downloads"]
    warning = " ".join(paused.stderr.split())
    assert "warning: the configuration is invalid: " in warning and "schedule.yaml" in warning
    assert "queues.yaml is enough for this command" in warning
    assert query(db_url, "SELECT queue FROM jobsys_queue_pauses") == [("story_downloads",)]
    resumed = cli(*url, "queues", "resume", "story_downloads")
    assert resumed.exit_code == 0, resumed.stderr
    assert query(db_url, "SELECT queue FROM jobsys_queue_pauses") == []
    with (config_dir / "queues.yaml").open("a") as f:
        f.write("base: [\n")
    refused = cli(*url, "queues", "pause", "story_downloads")
    assert refused.exit_code == 2 and "queues.yaml" in refused.stderr
    assert query(db_url, "SELECT queue FROM jobsys_queue_pauses") == []
