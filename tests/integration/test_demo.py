"""DEMO: seeding is idempotent and the burst covers every lane."""

from __future__ import annotations

from rt_support import query


def test_demo_seed_is_idempotent(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    first = cli("--database-url", db_url, "demo", "seed", "--accounts", "30", "--json")
    assert first.exit_code == 0, first.stderr
    assert first.json() == {"accounts_before": 0, "accounts": 30}
    again = cli("--database-url", db_url, "demo", "seed", "--accounts", "30", "--json")
    assert again.json() == {"accounts_before": 30, "accounts": 30}
    assert query(
        db_url, "SELECT count(*), count(*) FILTER (WHERE NOT active) FROM demo_accounts"
    ) == [(30, 1)]


async def test_demo_burst_reaches_every_lane(settings, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from jobsys.config.application import load_config
    from jobsys.demo import run

    demo_settings = run.with_demo(settings)
    result = await run.burst(demo_settings, load_config(demo_settings), accounts=50)
    assert sum(result["deferred"].values()) > 0
    config = load_config(settings)
    queues = {row[0] for row in query(db_url, "SELECT DISTINCT queue_name FROM procrastinate_jobs")}
    assert {config.lane_of(q) for q in queues} == set(config.lanes)
    # The story pipelines start on their first stage (story downloads).
    assert query(db_url, "SELECT count(*) FROM jobsys_pipelines") == [(run.BURST_PIPELINES,)]
    assert query(
        db_url,
        "SELECT DISTINCT queue FROM jobsys_pipeline_steps WHERE job_id IS NOT NULL",
    ) == [("story_downloads",)]
