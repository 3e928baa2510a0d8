"""The local failure spool: durable appends, replay that keeps what fails, poison buried."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from jobsys.failures.spool import PoisonRecord, Spool, decode, encode
from jobsys.failures.store import FailureRow


def row(n: int) -> FailureRow:
    return FailureRow(
        job_id=n, task="t", queue="q", attempt=1, error_class="E", message=f"m{n}",
        kind="runtime", retryable=True, args={"a": [1, {"b": n}]},
        occurred_at=datetime(2026, 2, 20, 3, 0, n % 60, tzinfo=UTC),
    )  # fmt: skip


def test_round_trip() -> None:
    assert decode(encode(row(7))) == row(7)


async def test_a_line_with_a_field_unknown_here_replays(tmp_path: Path) -> None:
    """A line spooled by a newer version (a field added since) is replayed after a
    rollback, not buried as poison."""
    spool = Spool(tmp_path / "spool")
    spool.directory.mkdir()
    data = json.loads(encode(row(3)))
    data["added_by_a_newer_version"] = "x"
    spool.live.write_text(json.dumps(data) + "\n")
    seen: list[FailureRow] = []

    async def record(r: FailureRow) -> None:
        seen.append(r)

    result = await spool.replay(record)
    assert (result.replayed, result.remaining, result.dead) == (1, 0, 0)
    assert seen == [row(3)]
    assert not (tmp_path / "spool" / "dead").exists()


async def test_concurrent_appends_then_replay_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    threads = [
        threading.Thread(target=lambda k=k: [spool.append([row(k * 100 + i)]) for i in range(25)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spool.count() == 100
    seen: list[int] = []

    async def record(r: FailureRow) -> None:
        seen.append(r.job_id)

    result = await spool.replay(record)
    assert (result.replayed, result.remaining, result.dead) == (100, 0, 0)
    assert sorted(seen) == sorted(k * 100 + i for k in range(4) for i in range(25))
    assert spool.count() == 0 and spool.pending() == []


async def test_failing_database_keeps_the_rest_and_poison_is_buried(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append([row(i) for i in range(10)])
    calls: list[int] = []

    async def flaky(r: FailureRow) -> None:
        calls.append(r.job_id)
        if r.job_id == 2:
            raise PoisonRecord("invalid")
        if r.job_id == 5:
            raise ConnectionError("database went away")

    result = await spool.replay(flaky)
    assert (result.replayed, result.remaining, result.dead) == (4, 5, 1)
    assert spool.count() == 5
    assert (tmp_path / "spool" / "dead" / "failures.jsonl").read_text().count("\n") == 1

    async def ok(r: FailureRow) -> None:
        calls.append(r.job_id)

    calls.clear()
    result = await spool.replay(ok)
    assert (result.replayed, result.remaining) == (5, 0)
    assert calls == [5, 6, 7, 8, 9]
