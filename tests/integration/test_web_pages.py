"""The web console over HTTP against a real database: every page, filters, 404s,
actions through the CLI's rules, login, CSRF, the read-only role and the canary."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import failures_support as fx
import pytest
import web_support as ws
from failures_support import spool_home  # noqa: F401  (fixture)
from starlette.testclient import TestClient

from jobsys.settings import Settings
from jobsys.web.app import create_app
from jobsys.web.auth import ADMIN, READ_ONLY, Credentials, hash_secret, load_credentials

pytestmark = pytest.mark.usefixtures("spool_home")

TOKEN = "admin-token-0123456789abcdef"
RO_TOKEN = "readonly-token-0123456789abcdef"


@pytest.fixture
def seeded(settings: Settings, db_url: str) -> ws.Seeded:
    return ws.seed(settings, db_url)


def client_for(
    settings: Settings,
    db_url: str,
    creds: Credentials | None = None,
    *,
    base_url: str = "http://127.0.0.1",
    **options: Any,
) -> TestClient:
    app = create_app(settings, creds or Credentials(), database_url=db_url, live=False, **options)
    return TestClient(app, base_url=base_url)


@pytest.fixture
def client(settings: Settings, db_url: str) -> Iterator[TestClient]:
    with client_for(settings, db_url) as c:
        yield c


def csrf(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def test_every_page_renders_with_data_and_headers(client: TestClient, seeded: ws.Seeded) -> None:
    for path in ws.pages(seeded):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert "<main" in response.text
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert "<script>" not in response.text and " on" + "click=" not in response.text
    dashboard = client.get("/admin/background_jobs").text
    for section in ("lanes", "throughput", "pickup", "recent-failures", "open-issues", "schedule"):
        assert f'id="{section}"' in dashboard
    assert "fx.runtime" in dashboard and "continuous_account_processing" in dashboard
    failures = client.get("/admin/background_jobs/failures").text
    for label in ("canary", "auth", "runtime", "transient"):
        assert f'data-failure="{seeded.failures[label]}"' in failures
    auth_only = client.get("/admin/background_jobs/failures?kind=authentication").text
    assert f'data-failure="{seeded.failures["auth"]}"' in auth_only
    assert f'data-failure="{seeded.failures["runtime"]}"' not in auth_only
    detail = client.get(f"/admin/background_jobs/failures/{seeded.failures['runtime']}").text
    assert "KeyError" in detail and "Traceback" in detail and "edge_followed_by" in detail
    # A failure its job's retry policy runs again names the policy, not the engine.
    retried = client.get(f"/admin/background_jobs/failures/{seeded.failures['transient']}").text
    assert "(retried automatically by its retry policy)" in retried
    assert "Procrastinate" not in retried
    workers = client.get("/admin/workers").text
    assert "web-test-host" in workers and "4242" in workers
    assert "web-test-host" in client.get("/admin/workers?state=running").text
    # none fenced, while one runs: not "no worker processes (start one ...)" (walk-through)
    fenced = client.get("/admin/workers?state=fenced").text
    assert "no fenced worker process among those live or ended in the last day" in fenced
    assert "start one with" not in fenced
    # all=true lists every one, as all=1 does: its empty listing says so.
    every_fenced = client.get("/admin/workers?state=fenced&all=true").text
    assert "no fenced worker process" in every_fenced
    assert "in the last day" not in every_fenced
    bad_state = client.get("/admin/workers?state=sleepy")
    assert bad_state.status_code == 400 and 'id="error-state"' in bad_state.text
    # The select filters (workers' state, pipelines' status, issues' kind) are one macro.
    assert '<select name="state" aria-invalid="true"' in bad_state.text
    bad_kind = client.get("/admin/issues?kind=nope")
    assert (
        bad_kind.status_code == 400 and '<select name="kind" aria-invalid="true"' in bad_kind.text
    )
    by_text = client.get("/admin/background_jobs/failures?error=EDGE_followed").text
    assert f'data-failure="{seeded.failures["runtime"]}"' in by_text
    assert f'data-failure="{seeded.failures["auth"]}"' not in by_text
    by_arg = client.get("/admin/jobs?arg=account_id=5").text
    assert f'data-job="{seeded.jobs["waiting"]}"' in by_arg
    assert f'data-job="{seeded.jobs["canary"]}"' not in by_arg
    bad_arg = client.get("/admin/jobs?arg=no-equals-sign")
    assert bad_arg.status_code == 400 and 'id="error-arg"' in bad_arg.text
    jobs = client.get("/admin/jobs?status=todo").text
    assert f'data-job="{seeded.jobs["waiting"]}"' in jobs
    assert f'data-job="{seeded.jobs["canary"]}"' not in jobs


def test_root_redirects_to_the_dashboard(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/background_jobs"


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("kind=nope", "kind", "--kind 'nope' is not a failure kind."),
        ("since=yesterdayish", "since", "--since"),
        ("issue=abc", "issue", "--issue 'abc' is not an issue id: issue ids are whole"),
        ("issue=0", "issue", "--issue '0' is not an issue id"),
        ("before=1.5", None, "--before '1.5' is not a failure id: failure ids are whole"),
        ("limit=0", None, "--limit: 0 is out of range."),
        ("group_by=colour", "group_by", "--group-by: 'colour' is not one of"),
    ],
)
def test_bad_failure_filters_show_the_cli_message_next_to_the_filter(
    client: TestClient, query: str, field: str | None, message: str
) -> None:
    response = client.get(f"/admin/background_jobs/failures?{query}")
    assert response.status_code == 400
    assert message in response.text.replace("&#39;", "'")
    if field:
        assert f'id="error-{field}"' in response.text
    assert 'id="failure-filters"' in response.text  # the page, not an error page


@pytest.mark.parametrize(
    ("query", "args"),
    [
        ("issue=abc", ("failures", "list", "--issue", "abc")),
        ("issue=-3", ("failures", "list", "--issue", "-3")),
        ("before=x", ("failures", "list", "--before", "x")),
        ("all=1&issue=0", ("retry", "--all", "--issue", "0")),
    ],
)
def test_a_bad_id_filter_reads_as_the_cli_says_it(
    client: TestClient, cli: Any, db_url: str, query: str, args: tuple[str, ...]
) -> None:
    """The failure filters (and the retry's, on its dry-run page) refuse a bad issue or
    failure id in the CLI's words, the kind of id and where to list them: they said
    "--issue: 'abc' is not a valid integer." and "--issue 0 is not a valid id; ids are
    positive integers." while the CLI said "--issue 'abc' is not an issue id..."."""
    said = cli("--database-url", db_url, *args)
    assert said.exit_code == 2, said.stderr
    [line] = [x for x in said.stderr.splitlines() if x.startswith("error: ")]
    page = "/admin/retry" if query.startswith("all=1") else "/admin/background_jobs/failures"
    response = client.get(f"{page}?{query}")
    assert response.status_code == 400
    text = response.text.replace("&#39;", "'")
    assert line.removeprefix("error: ") in text, (line, text)
    listed_by = "jobsys failures list" if "before" in query else "jobsys issues list"
    assert f"List them with `{listed_by}`." in said.stderr and listed_by in text


@pytest.mark.parametrize(
    ("group_by", "column", "field"),
    [
        ("task", "task", "task"),
        ("queue", "queue", "queue"),
        ("kind", "kind", "kind"),
        ("issue", "issue_id", "issue"),
        ("fingerprint", "fingerprint", None),
    ],
)
def test_failures_grouped_like_the_cli_with_links_to_each_group(
    client: TestClient, db_url: str, seeded: ws.Seeded, group_by: str, column: str, field: str
) -> None:
    # A stable URL: the grouping and the filters are in the query string.
    response = client.get(f"/admin/background_jobs/failures?kind=runtime&group_by={group_by}")
    assert response.status_code == 200, response.text
    counts = fx.rows(
        db_url,
        f"SELECT {column}::text AS key, count(*) AS n FROM jobsys_failures "
        f"WHERE kind = 'runtime' GROUP BY {column}",
    )
    assert counts, "the seed has runtime failures"
    shown = dict(
        re.findall(r'<tr data-group="([^"]*)">.*?<td class="num">(\d+)</td>', response.text, re.S)
    )
    assert shown == {str(r["key"]): str(r["n"]) for r in counts}
    assert 'id="failures"' not in response.text  # the groups, not the rows
    if field is not None:
        key = str(counts[0]["key"])
        kept = "" if field == "kind" else "kind=runtime&amp;"
        link = f"/admin/background_jobs/failures?{kept}{field}={quote(key)}"
        assert link in response.text  # a group links to its failures, filters kept
        listed = client.get(link.replace("&amp;", "&"))
        assert listed.status_code == 200
        assert len(re.findall(r"<tr data-failure=", listed.text)) == min(int(counts[0]["n"]), 50)


def test_the_group_view_counts_a_bounded_window_and_says_which(
    client: TestClient, db_url: str, seeded: ws.Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobsys.failures import filters

    (all_failures,) = fx.rows(db_url, "SELECT count(*) AS n FROM jobsys_failures")
    total = int(all_failures["n"])
    assert total > 2, "the seed has more failures than the window below"
    whole = client.get("/admin/background_jobs/failures?group_by=kind")
    assert f"over all {total:,} matching failures" in whole.text  # under the window: all
    assert 'id="group-window"' not in whole.text

    monkeypatch.setattr(filters, "GROUP_WINDOW", 2)
    # The newest 2 by time (rows written in one transaction share it: any of those).
    candidates = fx.rows(
        db_url,
        "SELECT kind FROM jobsys_failures WHERE occurred_at >= "
        "(SELECT occurred_at FROM jobsys_failures ORDER BY occurred_at DESC LIMIT 1 OFFSET 1)",
    )
    response = client.get("/admin/background_jobs/failures?group_by=kind")
    assert response.status_code == 200, response.text
    assert "over the newest 2 matching failures (back to " in response.text
    assert "Older matching failures are not in these counts" in response.text
    counts = re.findall(
        r'<tr data-group="([^"]*)">.*?<td class="num">(\d+)</td>', response.text, re.S
    )
    assert sum(int(n) for _, n in counts) == 2
    for kind, n in counts:
        assert int(n) <= sum(1 for row in candidates if row["kind"] == kind)
    link = "/admin/background_jobs/failures?group_by=kind&amp;window=all"
    assert link in response.text
    every = client.get(link.replace("&amp;", "&"))
    assert every.status_code == 200
    assert "every matching failure counted" in every.text
    shown = sum(
        int(n)
        for _, n in re.findall(
            r'<tr data-group="([^"]*)">.*?<td class="num">(\d+)</td>', every.text, re.S
        )
    )
    assert shown == total
    bad = client.get("/admin/background_jobs/failures?group_by=kind&window=most")
    assert bad.status_code == 400 and "--window &#39;most&#39;" in bad.text


def test_a_text_search_in_the_args_walks_a_range_at_a_time_and_goes_on(
    client: TestClient, seeded: ws.Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobsys.web import pages

    whole = client.get("/admin/jobs?arg_contains=ana")  # a few jobs: one range holds all
    assert f'data-job="{seeded.jobs["canary"]}"' in whole.text
    assert "Searched the args of every job from" in whole.text
    monkeypatch.setattr(pages, "SEARCH_CHUNK_IDS", 5)
    monkeypatch.setattr(pages, "SEARCH_BUDGET_SECONDS", 0.0)  # one range a page
    path, pages_walked, found = "/admin/jobs?arg_contains=ana", 0, []
    while True:
        response = client.get(path)
        assert response.status_code == 200, response.text
        pages_walked += 1
        found += re.findall(r'<tr data-job="(\d+)">', response.text)
        more = re.search(
            r'<a href="(/admin/jobs\?[^"]*below=\d+)">search older jobs</a>', response.text
        )
        if more is None:
            assert "Searched the args of every job from" in response.text
            break
        assert re.search(r"Searched the args of jobs \d+ down to \d+", response.text)
        path = more.group(1).replace("&amp;", "&")
        assert pages_walked < 100
    assert pages_walked > 1 and found == [str(seeded.jobs["canary"])]
    bad = client.get("/admin/jobs?arg_contains=ana&below=x")
    assert bad.status_code == 400 and "--below" in bad.text


def test_bad_job_filters_show_the_cli_message(client: TestClient) -> None:
    response = client.get("/admin/jobs?status=sleeping")
    assert response.status_code == 400
    assert "unknown status &#39;sleeping&#39;" in response.text
    assert 'id="error-status"' in response.text
    response = client.get("/admin/jobs?queue=profilez")
    assert response.status_code == 400 and "did you mean" in response.text
    assert 'id="error-queue"' in response.text


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/admin/background_jobs/failures/999999", "no failure 999999"),
        ("/admin/jobs/999999", "no job 999999"),
        ("/admin/issues/999999", "no issue 999999"),
        ("/admin/pipelines/999999", "999999"),
        ("/admin/fanout/999999", "999999"),
        ("/admin/workers/nohost:1", "no worker process &#39;nohost:1&#39;"),
        ("/admin/jobs/abc", "no job &#39;abc&#39;"),
        ("/admin/nothing-here", "no page at /admin/nothing-here"),
    ],
)
def test_unknown_ids_are_404_pages_that_say_what_and_link_back(
    client: TestClient, path: str, said: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert said in response.text
    assert re.search(r'<a href="/admin/[a-z_/]*">Back to', response.text)


def test_retry_a_failure_dry_run_then_confirm_leaves_the_cli_audit_with_the_web_actor(
    client: TestClient, seeded: ws.Seeded, db_url: str
) -> None:
    failure = seeded.failures["runtime"]
    preview = client.get(f"/admin/retry?failure={failure}")
    assert "would_retry" in preview.text
    # newuser L14: the why column said it again ("retried retried"); it says what happens
    assert verdict_row(preview.text) == ("would_retry", "the job would run again")
    assert fx.rows(db_url, "SELECT * FROM jobsys_retry_events") == []  # a dry run wrote nothing
    done = client.post(
        "/admin/retry", data={"failure": str(failure), "csrf_token": csrf(preview.text)}
    )
    assert done.status_code == 200, done.text
    assert "1 retried, 0 refused" in done.text
    assert verdict_row(done.text) == ("retried", "the job runs again")
    (event,) = fx.rows(db_url, "SELECT failure_id, decision, actor FROM jobsys_retry_events")
    assert event == {"failure_id": failure, "decision": "retried", "actor": "web:tester"}
    page = client.get(f"/admin/background_jobs/failures/{failure}").text
    assert "retried" in page and "web:tester" in page


def verdict_row(page: str) -> tuple[str, str]:
    """The verdict and the why of the retry page's only row."""
    (row,) = re.findall(
        r'<span class="verdict verdict-[^"]*">([^<]*)</span></td><td>([^<]*)</td>', page
    )
    return row


def test_a_refused_retry_shows_its_verdict(client: TestClient, seeded: ws.Seeded) -> None:
    failure = seeded.failures["auth"]
    preview = client.get(f"/admin/retry?failure={failure}")
    assert "skipped_authentication" in preview.text
    assert 'id="confirm-retry"' not in preview.text  # nothing to confirm
    done = client.post(
        "/admin/retry", data={"failure": str(failure), "csrf_token": csrf(preview.text)}
    )
    assert "skipped_authentication" in done.text and "0 retried, 1 refused" in done.text
    verdict, why = verdict_row(done.text)
    assert verdict == "skipped_authentication" and why.startswith("authentication failure")


def test_a_failure_whose_job_succeeded_since_offers_no_retry(
    client: TestClient, seeded: ws.Seeded, db_url: str
) -> None:
    """The page offered "Retry…" whatever the rules said; for a failure whose job has
    succeeded since (run again, by hand or by Procrastinate) every retry is refused
    (skipped_not_failed): the button is disabled and says why."""
    failure, job = seeded.failures["runtime"], seeded.jobs["runtime"]
    page = client.get(f"/admin/background_jobs/failures/{failure}").text
    assert 'id="retry-link"' in page and 'id="retry-refused"' not in page  # still failed
    assert 'id="retry-latest"' in client.get(f"/admin/jobs/{job}").text
    fx.rows(
        db_url,
        "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s RETURNING id",
        (job,),
    )
    page = client.get(f"/admin/background_jobs/failures/{failure}").text
    assert 'id="retry-link"' not in page
    refused = re.search(r'<p id="retry-refused">(.*?)</p>', page)
    assert refused is not None
    assert refused.group(1) == (
        '<button type="button" disabled>Retry…</button> not offered: '
        "skipped_not_failed: the job is succeeded, not failed"
    )
    # The job's page, which offered "Retry its latest failure…", says the same.
    job_page = client.get(f"/admin/jobs/{job}").text
    assert 'id="retry-latest"' not in job_page and f"/admin/retry?failure={failure}" not in job_page
    assert "not offered: skipped_not_failed: the job is succeeded, not failed" in job_page
    # What the retry itself says (the rules the page asked).
    preview = client.get(f"/admin/retry?failure={failure}")
    assert verdict_row(preview.text) == ("skipped_not_failed", "the job is succeeded, not failed")


def test_an_authentication_failure_offers_no_retry(client: TestClient, seeded: ws.Seeded) -> None:
    page = client.get(f"/admin/background_jobs/failures/{seeded.failures['auth']}").text
    assert 'id="retry-link"' not in page
    assert "not offered: skipped_authentication: authentication failure" in page


def test_the_bulk_retry_button_only_when_a_filter_is_set(
    client: TestClient, seeded: ws.Seeded
) -> None:
    """Unfiltered, the retry page would refuse (409, as `retry --all`): no button leads
    there; a filtered list links to the dry run of exactly its filters."""
    unfiltered = client.get("/admin/background_jobs/failures")
    assert unfiltered.status_code == 200 and 'data-failure="' in unfiltered.text
    assert "/admin/retry?all=1" not in unfiltered.text
    filtered = client.get("/admin/background_jobs/failures?kind=runtime")
    assert 'href="/admin/retry?all=1&amp;kind=runtime"' in filtered.text


def test_bulk_retry_by_filter_and_by_issue(
    client: TestClient, seeded: ws.Seeded, db_url: str
) -> None:
    preview = client.get("/admin/retry?all=1&kind=runtime")
    assert preview.status_code == 200, preview.text
    summary = re.search(r"retry-summary\">([^<]*)", preview.text)
    assert summary and "2 would be retried" in summary.group(1), summary  # canary + runtime
    assert '<input type="hidden" name="kind" value="runtime">' in preview.text
    refused = client.get("/admin/retry?all=1")
    assert refused.status_code == 409 and "without any filter would retry every" in refused.text
    assert client.get("/admin/retry").status_code == 400
    issue = seeded.issues["transient"]
    preview = client.get(f"/admin/retry?issue={issue}")
    done = client.post("/admin/retry", data={"issue": str(issue), "csrf_token": csrf(preview.text)})
    # Procrastinate retries a transient failure by itself: its job waits again, so the
    # rules refuse (the job is not failed) and the page says so.
    assert "0 retried, 1 refused, of 1 matched" in done.text and "not failed" in done.text
    assert client.get("/admin/retry?issue=424242").status_code == 404


def test_issue_resolve_mute_reopen(client: TestClient, seeded: ws.Seeded, db_url: str) -> None:
    issue = seeded.issues["runtime"]
    page = client.get(f"/admin/issues/{issue}").text
    token = csrf(page)
    response = client.post(f"/admin/issues/{issue}/resolve", data={"csrf_token": token})
    assert response.status_code == 200 and f"issue {issue} resolved" in response.text
    (row,) = fx.rows(
        db_url, "SELECT status, resolved_by FROM jobsys_issues WHERE id = %s", (issue,)
    )
    assert row == {"status": "resolved", "resolved_by": "web:tester"}
    response = client.post(f"/admin/issues/{issue}/reopen", data={"csrf_token": token})
    assert f"issue {issue} reopened" in response.text
    # who reopened it is kept as from the CLI (nothing recorded it before) and shown
    (row,) = fx.rows(db_url, "SELECT details FROM jobsys_issues WHERE id = %s", (issue,))
    assert row["details"]["reopened_by"] == "web:tester"
    assert "<dt>reopened</dt><dd>by web:tester</dd>" in response.text
    response = client.post(f"/admin/issues/{issue}/mute", data={"csrf_token": token, "for": "2h"})
    assert "muted until" in response.text
    # who muted it is kept (nothing recorded it before) and shown on the issue's page
    (row,) = fx.rows(db_url, "SELECT details FROM jobsys_issues WHERE id = %s", (issue,))
    assert row["details"]["muted_by"] == "web:tester"
    assert re.search(r"<dt>muted until</dt><dd>[^<]* by web:tester</dd>", response.text)
    bad = client.post(f"/admin/issues/{issue}/mute", data={"csrf_token": token, "for": "soon"})
    assert bad.status_code == 400 and "--for" in bad.text
    assert (
        client.post("/admin/issues/424242/resolve", data={"csrf_token": token}).status_code == 404
    )


def test_cancel_a_job_and_a_pipeline_and_pause_a_schedule_entry(
    client: TestClient, seeded: ws.Seeded, db_url: str
) -> None:
    job = seeded.jobs["waiting"]
    token = csrf(client.get(f"/admin/jobs/{job}").text)
    response = client.post(f"/admin/jobs/{job}/cancel", data={"csrf_token": token})
    assert f"job {job} cancelled" in response.text
    # audited as a bulk cancel is (nothing recorded who cancelled one job before)
    audit = "SELECT action, actor, filters, matched, counts, status FROM jobsys_bulk_actions"
    assert fx.rows(db_url, audit) == [
        {"action": "jobs_cancel", "actor": "web:tester", "filters": {"job_id": job},
         "matched": 1, "counts": {"cancelled": 1}, "status": "finished"},
    ]  # fmt: skip
    again = client.post(f"/admin/jobs/{job}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "only waiting (todo) or running (doing)" in again.text
    response = client.post(f"/admin/pipelines/{seeded.pipeline}/cancel", data={"csrf_token": token})
    assert f"pipeline {seeded.pipeline} cancelled" in response.text
    (row,) = fx.rows(
        db_url, "SELECT cancelled_by FROM jobsys_pipelines WHERE id = %s", (seeded.pipeline,)
    )
    assert row["cancelled_by"] == "web:tester"
    response = client.post("/admin/schedule/story_auto_replies/pause", data={"csrf_token": token})
    assert "story_auto_replies paused" in response.text
    (row,) = fx.rows(
        db_url, "SELECT paused FROM jobsys_schedule_entries WHERE name = 'story_auto_replies'"
    )
    assert row["paused"] is True
    response = client.post("/admin/schedule/story_auto_replies/resume", data={"csrf_token": token})
    assert "story_auto_replies resumed" in response.text
    response = client.post(
        "/admin/queues/story_downloads/pause",
        data={"csrf_token": token, "for": "30m", "reason": "upstream 429"},
    )
    assert "paused story_downloads until" in response.text
    (row,) = fx.rows(db_url, "SELECT paused_by, reason FROM jobsys_queue_pauses")
    assert row == {"paused_by": "web:tester", "reason": "upstream 429"}
    queues = client.get("/admin/queues").text
    assert "upstream 429" in queues and "paused" in queues
    assert "upstream 429" in client.get("/admin/background_jobs").text
    response = client.post("/admin/queues/story_downloads/resume", data={"csrf_token": token})
    assert "resumed story_downloads" in response.text
    events = fx.rows(db_url, "SELECT action, actor FROM jobsys_queue_pause_events ORDER BY id")
    assert events == [
        {"action": "pause", "actor": "web:tester"},
        {"action": "resume", "actor": "web:tester"},
    ]
    bad = client.post("/admin/queues/no_such_queue/pause", data={"csrf_token": token})
    assert bad.status_code == 400 and "no_such_queue" in bad.text
    unknown = client.post("/admin/schedule/no_such_entry/pause", data={"csrf_token": token})
    assert unknown.status_code in (400, 404) and "no_such_entry" in unknown.text


def test_a_post_without_a_csrf_token_is_rejected_and_changes_nothing(
    client: TestClient, seeded: ws.Seeded, db_url: str
) -> None:
    issue = seeded.issues["runtime"]
    client.get("/admin/background_jobs")  # a session exists
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(f"/admin/issues/{issue}/resolve", data=data)
        assert response.status_code == 403 and "CSRF" in response.text
    response = client.post("/admin/retry", data={"failure": str(seeded.failures["runtime"])})
    assert response.status_code == 403
    assert fx.rows(db_url, "SELECT * FROM jobsys_retry_events") == []
    (row,) = fx.rows(db_url, "SELECT status FROM jobsys_issues WHERE id = %s", (issue,))
    assert row["status"] == "open"


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(
        f"# name role hash\nada admin {hash_secret('ada-password')}\n"
        f"max read-only {hash_secret('max-password')}\n"
    )
    return path


def login(client: TestClient, **fields: str) -> None:
    page = client.get("/admin/login")
    response = client.post("/admin/login", data={**fields, "csrf_token": csrf(page.text)})
    assert response.status_code == 200, response.text  # followed the redirect


def session_cookie(client: TestClient, **headers: str) -> str:
    """The session cookie a new visitor of the login page is given."""
    client.cookies.clear()
    response = client.get("/admin/login", headers=headers)
    (line,) = [
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "jobsys_web=" in v
    ]
    return str(line).lower()


def test_the_session_cookie_is_secure_when_configured_or_behind_a_trusted_tls_proxy(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    creds = load_credentials({}, users_file=users_file(tmp_path))
    https = {"x-forwarded-proto": "https"}
    with client_for(settings, db_url, creds) as plain:
        assert "; secure" not in session_cookie(plain)
        # An untrusted client cannot claim TLS (nor turn Secure off when it is on).
        assert "; secure" not in session_cookie(plain, **https)
    with client_for(settings, db_url, creds, base_url="https://127.0.0.1") as tls:
        assert "; secure" in session_cookie(tls)
    with client_for(settings, db_url, creds, secure_cookies=True) as forced:
        cookie = session_cookie(forced)
        assert "; secure" in cookie and "samesite=strict" in cookie and "httponly" in cookie
    with client_for(settings, db_url, creds, trust_proxy=True) as proxied:
        assert "; secure" in session_cookie(proxied, **https)
        assert "; secure" not in session_cookie(proxied)


def test_failed_logins_are_limited_per_client_and_per_user(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    creds = load_credentials({}, users_file=users_file(tmp_path))

    def attempt(client: TestClient, name: str, password: str, **headers: str) -> Any:
        page = client.get("/admin/login")
        data = {"username": name, "password": password, "csrf_token": csrf(page.text)}
        return client.post("/admin/login", data=data, headers=headers, follow_redirects=False)

    with client_for(settings, db_url, creds, trust_proxy=True) as client:
        for _ in range(5):
            assert (
                attempt(client, "ada", "wrong", **{"x-forwarded-for": "10.0.0.1"}).status_code
                == 401
            )
        # The sixth try is refused even with the right password, with a clear message.
        limited = attempt(client, "ada", "ada-password", **{"x-forwarded-for": "10.0.0.1"})
        assert limited.status_code == 429
        assert "Too many failed logins" in limited.text and "try again" in limited.text
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Per user: ada from another address is limited too; max from another is not.
        other = {"x-forwarded-for": "10.0.0.2"}
        assert attempt(client, "ada", "ada-password", **other).status_code == 429
        assert attempt(client, "max", "max-password", **other).status_code == 303
        # Per client: the limited address cannot try another user either.
        assert (
            attempt(client, "max", "max-password", **{"x-forwarded-for": "10.0.0.1"}).status_code
            == 429
        )
    with client_for(settings, db_url, creds, login_attempts="2/second") as client:
        for _ in range(2):
            assert attempt(client, "ada", "wrong").status_code == 401
        assert attempt(client, "ada", "ada-password").status_code == 429
        time.sleep(1.1)  # the window moves on: the right password works again
        assert attempt(client, "ada", "ada-password").status_code == 303


def test_login_roles_and_the_read_only_role_cannot_act(
    settings: Settings, db_url: str, seeded: ws.Seeded, tmp_path: Path
) -> None:
    creds = load_credentials(
        {"JOBSYS_WEB_TOKEN": TOKEN, "JOBSYS_WEB_READONLY_TOKEN": RO_TOKEN},
        users_file=users_file(tmp_path),
    )
    issue = seeded.issues["runtime"]
    with client_for(settings, db_url, creds) as anon:
        response = anon.get("/admin/background_jobs", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/admin/login?next=")
        assert anon.get("/admin/events").status_code == 401
        page = anon.get("/admin/login")
        wrong = anon.post(
            "/admin/login",
            data={"username": "ada", "password": "nope", "csrf_token": csrf(page.text)},
        )
        assert wrong.status_code == 401 and "Wrong name, password or token" in wrong.text
        anon_post = anon.post(f"/admin/issues/{issue}/resolve", data={"csrf_token": "x"})
        assert anon_post.status_code == 401
    with client_for(settings, db_url, creds) as ro:
        login(ro, username="max", password="max-password")
        page = ro.get(f"/admin/issues/{issue}")
        assert page.status_code == 200 and "max (read-only)" in page.text
        assert 'id="resolve-issue"' not in page.text  # no buttons for what it cannot do
        response = ro.post(f"/admin/issues/{issue}/resolve", data={"csrf_token": csrf(page.text)})
        assert response.status_code == 403 and "read-only" in response.text
        # The dry run is open to it, worded as a dry run: it said "Retrying failure N as
        # web:max" above a verdict it can never confirm.
        dry = ro.get(f"/admin/retry?failure={seeded.failures['runtime']}").text
        assert "Retrying" not in dry and 'id="confirm-retry"' not in dry
        assert "the read-only role cannot retry" in dry
        # The failure's page says why it offers no retry (it showed nothing at all, and
        # a manager following an incident link could not tell a missing button from a bug).
        failure = ro.get(f"/admin/background_jobs/failures/{seeded.failures['runtime']}").text
        assert 'id="retry-link"' not in failure
        assert "Retry: not offered, max has the read-only role (ask an admin)." in failure
        assert f'<a href="/admin/retry?failure={seeded.failures["runtime"]}">' in failure
    with client_for(settings, db_url, creds) as ro_token:
        page = ro_token.get(
            "/admin/background_jobs", headers={"authorization": f"Bearer {RO_TOKEN}"}
        )
        assert page.status_code == 200
        response = ro_token.post(
            f"/admin/issues/{issue}/resolve", headers={"authorization": f"Bearer {RO_TOKEN}"}
        )
        assert response.status_code == 403
    (row,) = fx.rows(db_url, "SELECT status FROM jobsys_issues WHERE id = %s", (issue,))
    assert row["status"] == "open"
    with client_for(settings, db_url, creds) as admin:
        login(admin, username="ada", password="ada-password")
        page = admin.get(f"/admin/issues/{issue}")
        response = admin.post(
            f"/admin/issues/{issue}/resolve", data={"csrf_token": csrf(page.text)}
        )
        assert f"issue {issue} resolved" in response.text
    (row,) = fx.rows(db_url, "SELECT resolved_by FROM jobsys_issues WHERE id = %s", (issue,))
    assert row["resolved_by"] == "web:ada"
    with client_for(settings, db_url, creds) as by_token:
        login(by_token, token=TOKEN)
        assert "token (admin)" in by_token.get("/admin/background_jobs").text


def test_a_named_token_acts_under_its_name(
    settings: Settings, db_url: str, seeded: ws.Seeded
) -> None:
    """Every token login was audited as web:token (or web:token-read-only): an operator
    reading resolved_by could not tell who acted. JOBSYS_WEB_TOKEN_NAME names it; a
    token without a name still acts as web:token."""

    def resolve(creds: Credentials, issue: int, token: str) -> str:
        with client_for(settings, db_url, creds) as client:
            login(client, token=token)
            page = client.get(f"/admin/issues/{issue}")
            response = client.post(
                f"/admin/issues/{issue}/resolve", data={"csrf_token": csrf(page.text)}
            )
            assert f"issue {issue} resolved" in response.text, response.text[:500]
        (row,) = fx.rows(db_url, "SELECT resolved_by FROM jobsys_issues WHERE id = %s", (issue,))
        return str(row["resolved_by"])

    named = load_credentials(
        {
            "JOBSYS_WEB_TOKEN": TOKEN,
            "JOBSYS_WEB_TOKEN_NAME": "oncall",
            "JOBSYS_WEB_READONLY_TOKEN": RO_TOKEN,
            "JOBSYS_WEB_READONLY_TOKEN_NAME": "wallboard",
        }
    )
    assert resolve(named, seeded.issues["runtime"], TOKEN) == "web:oncall"  # was web:token
    with client_for(settings, db_url, named) as viewer:
        login(viewer, token=RO_TOKEN)
        assert "wallboard (read-only)" in viewer.get("/admin/background_jobs").text
        bearer = viewer.get("/admin/background_jobs", headers={"authorization": f"Bearer {TOKEN}"})
        assert "oncall (admin)" in bearer.text
    unnamed = load_credentials({"JOBSYS_WEB_TOKEN": TOKEN})
    assert resolve(unnamed, seeded.issues["auth"], TOKEN) == "web:token"  # as before


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"JOBSYS_WEB_TOKEN_NAME": "oncall"}, "JOBSYS_WEB_TOKEN_NAME is set but JOBSYS_WEB_TOKEN"),
        (
            {"JOBSYS_WEB_READONLY_TOKEN": RO_TOKEN, "JOBSYS_WEB_READONLY_TOKEN_NAME": "on call"},
            "JOBSYS_WEB_READONLY_TOKEN_NAME 'on call' is not a name",
        ),
        (
            {"JOBSYS_WEB_TOKEN": TOKEN, "JOBSYS_WEB_TOKEN_NAME": "ada"},
            "the web token name 'ada' is also a user's name",
        ),
        (
            {
                "JOBSYS_WEB_TOKEN": TOKEN,
                "JOBSYS_WEB_READONLY_TOKEN": RO_TOKEN,
                "JOBSYS_WEB_READONLY_TOKEN_NAME": "token",
            },
            "the web token name 'token' is also the other token's name",
        ),
    ],
)
def test_a_token_name_that_would_blur_the_audit_is_refused(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    from jobsys.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(said)):
        load_credentials(env, users_file=users_file(tmp_path))


def test_credentials_are_hashed_at_rest_and_checked() -> None:
    stored = hash_secret("s3cret-password")
    assert "s3cret-password" not in stored and stored.startswith("scrypt$")
    creds = Credentials(users={"ada": (ADMIN, stored)})
    user = creds.by_password("ada", "s3cret-password")
    assert user is not None and user.role == ADMIN
    assert creds.by_password("ada", "wrong") is None
    assert creds.by_password("bob", "s3cret-password") is None
    tokens = load_credentials({"JOBSYS_WEB_READONLY_TOKEN": RO_TOKEN})
    ro = tokens.by_token(RO_TOKEN)
    assert ro is not None and ro.role == READ_ONLY and tokens.by_token(TOKEN) is None
    assert RO_TOKEN.encode() not in b"".join(tokens.tokens)


def test_a_users_file_with_plain_passwords_is_refused(tmp_path: Path) -> None:
    from jobsys.errors import ConfigError

    path = tmp_path / "users"
    path.write_text("ada admin hunter2\nbob boss scrypt$1$2$3$4$5\n")
    with pytest.raises(ConfigError) as caught:
        load_credentials({}, users_file=path)
    text = str(caught.value)
    assert f"{path}:1: the password must be a hash" in text
    assert f"{path}:2: role 'boss' is not one of admin, read-only" in text


def test_secrets_canary_never_in_any_page(
    client: TestClient, seeded: ws.Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    seen = []
    for path in ws.pages(seeded):
        text = client.get(path).text
        assert ws.CANARY not in text, path
        seen.append(text)
    canary_failure = client.get(f"/admin/background_jobs/failures/{seeded.failures['canary']}")
    assert "[REDACTED]" in canary_failure.text and "ana" in canary_failure.text
    assert "[REDACTED]" in client.get(f"/admin/jobs/{seeded.jobs['waiting']}").text
    assert ws.CANARY not in caplog.text


def test_a_non_loopback_bind_without_credentials_refuses_to_start(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "web", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 2
    assert "refusing to serve the web console on 0.0.0.0 without authentication" in result.stderr
    short = cli("web", "--host", "0.0.0.0", env={"JOBSYS_WEB_TOKEN": "short"})
    assert short.exit_code == 2 and "JOBSYS_WEB_TOKEN is shorter than 16" in short.stderr


def test_a_port_in_use_is_one_readable_error(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from jobsys.web.server import bind

    taken = bind("127.0.0.1", 0)
    try:
        port = str(taken.getsockname()[1])
        result = cli("--database-url", db_url, "web", "--port", port)
    finally:
        taken.close()
    assert result.exit_code == 2
    assert (
        f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
    )


def test_the_login_page_opens_no_event_stream_it_may_not_read(
    settings: Settings, db_url: str
) -> None:
    """The login page loaded live.js, whose /admin/events answered 401: a console error and
    a red "Live updates interrupted" banner over the form the manager came to fill in."""
    creds = load_credentials({"JOBSYS_WEB_TOKEN": TOKEN, "JOBSYS_WEB_READONLY_TOKEN": RO_TOKEN})
    app = create_app(settings, creds, database_url=db_url, live=True)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        page = client.get("/admin/login")
        assert page.status_code == 200 and "/static/live.js" not in page.text
        assert client.get("/admin/events").status_code == 401
        login(client, token=RO_TOKEN)
        assert "/static/live.js" in client.get("/admin/background_jobs").text
