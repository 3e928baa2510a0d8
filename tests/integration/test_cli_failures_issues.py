"""``jobsys failures`` / ``jobsys issues``: JSON contracts, exit codes, literal filters."""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import failures_support as fx
import pytest

from jobsys.db.connect import connect
from jobsys.failures.recorder import record_failure
from jobsys.failures.store import FailureRow

NASTY = [
    "t%",
    "t_x",
    "t",
    "o'brien",
    'say "hi"',
    "back\\slash",
    "x'; DROP TABLE jobsys_failures; --",
    "%",
    "_",
    "tx",
]
FAILURE_KEYS = {
    "id", "job_id", "task", "queue", "lane", "kind", "retryable", "error_class", "message",
    "account_id", "profile_id", "attempt", "occurred_at", "issue_id", "retry_state",
}  # fmt: skip
ISSUE_KEYS = {
    "id", "fingerprint", "kind", "status", "title", "occurrences", "affected_accounts",
    "first_seen", "last_seen", "regression",
}  # fmt: skip
UNREACHABLE = "postgresql://nobody:pw@127.0.0.1:1/none"


def seed(db_url: str) -> list[dict[str, Any]]:
    config = fx.repo_config()
    now = datetime.now(UTC)
    kinds = itertools.cycle(["runtime", "transient", "authentication"])

    async def go() -> None:
        async with connect(db_url) as conn:
            for n, value in enumerate(NASTY * 3):
                kind = next(kinds)
                await record_failure(
                    conn,
                    FailureRow(
                        job_id=n + 1,
                        task=value,
                        queue=NASTY[(n + 1) % len(NASTY)],
                        lane=NASTY[(n + 2) % len(NASTY)],
                        attempt=1,
                        error_class="builtins.ValueError",
                        message=f"bad {n}",
                        kind=kind,
                        retryable=kind != "authentication",
                        account_id=NASTY[(n + 3) % len(NASTY)],
                        profile_id=NASTY[(n + 4) % len(NASTY)],
                        occurred_at=now - timedelta(hours=n),
                    ),
                    config,
                )

    asyncio.run(go())
    return fx.rows(db_url, "SELECT * FROM jobsys_failures ORDER BY occurred_at DESC, id DESC")


def test_groups_count_the_newest_window_and_say_how_to_count_all(  # type: ignore[no-untyped-def]
    cli, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobsys.failures import filters

    rows = seed(db_url)  # newest first, an hour apart: the newest 7 are exact
    monkeypatch.setattr(filters, "GROUP_WINDOW", 7)
    newest = rows[:7]
    data = cli("--database-url", db_url, "failures", "list", "--group-by", "kind", "--json").json()
    expected = {k: sum(1 for r in newest if r["kind"] == k) for k in {r["kind"] for r in newest}}
    assert {g["key"]: g["occurrences"] for g in data["items"]} == expected
    assert data["total"] == len(expected)
    assert data["window"] == {
        "newest": 7,
        "counted": 7,
        "oldest": newest[-1]["occurred_at"].isoformat().replace("+00:00", "Z"),
        "complete": False,
    }
    [note] = data["notes"]
    assert note.startswith("counted the newest 7 matching failures (back to ")
    assert "--window all counts every one" in note
    # fingerprint groups in the window name their issue, as the full count does
    by_fingerprint = cli(
        "--database-url", db_url, "failures", "list", "--group-by", "fingerprint", "--json"
    ).json()["items"]
    assert {g["key"]: (g["occurrences"], g["issue_id"]) for g in by_fingerprint} == {
        fp: (
            sum(1 for r in newest if r["fingerprint"] == fp),
            max(r["issue_id"] for r in newest if r["fingerprint"] == fp),
        )
        for fp in {r["fingerprint"] for r in newest}
    }
    assert all(g["issue_title"] for g in by_fingerprint)
    text = cli("--database-url", db_url, "failures", "list", "--group-by", "kind")
    assert text.exit_code == 0 and text.stderr == f"note: {note}\n"
    every = cli(
        "--database-url", db_url, "failures", "list", "--group-by", "kind", "--window", "all"
    )
    assert every.exit_code == 0 and every.stderr == ""
    exact = cli(
        "--database-url", db_url, "failures", "list", "--group-by", "kind",
        "--window", "all", "--json",
    ).json()  # fmt: skip
    assert (exact["window"], exact["notes"]) == (None, [])
    assert sum(g["occurrences"] for g in exact["items"]) == len(rows)
    monkeypatch.setattr(filters, "GROUP_WINDOW", len(rows) + 1)  # the window holds them all
    whole = cli("--database-url", db_url, "failures", "list", "--group-by", "kind", "--json").json()
    assert whole["notes"] == [] and whole["window"]["complete"] is True
    assert {g["key"]: g["occurrences"] for g in whole["items"]} == {
        g["key"]: g["occurrences"] for g in exact["items"]
    }
    bad = cli("--database-url", db_url, "failures", "list", "--group-by", "kind", "--window", "9")
    assert bad.exit_code == 2 and "--window '9'" in bad.stderr
    alone = cli("--database-url", db_url, "failures", "list", "--window", "all")
    assert alone.exit_code == 2 and "give it with --group-by" in alone.stderr


def test_filters_match_literally_like_a_python_oracle(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    rows = seed(db_url)
    before = fx.rows(
        db_url, "SELECT md5(string_agg(f::text, ',' ORDER BY id)) AS h FROM jobsys_failures f"
    )
    columns = {
        "task": "task",
        "queue": "queue",
        "lane": "lane",
        "account": "account_id",
        "profile": "profile_id",
    }
    checked = 0
    for option, column in columns.items():
        for value in NASTY:
            result = cli(
                "--database-url",
                db_url,
                "failures",
                "list",
                f"--{option}",
                value,
                "--json",
                "--limit",
                "1000",
            )
            assert result.exit_code == 0, result.stderr
            got = [f["id"] for f in result.json()["items"]]
            assert got == [r["id"] for r in rows if r[column] == value], (option, value)
            checked += len(got)
    assert checked == 5 * len(rows)  # every row found once per column, none by pattern
    for kind in ("runtime", "transient", "authentication"):
        got = cli(
            "--database-url",
            db_url,
            "failures",
            "list",
            "--kind",
            kind,
            "--json",
            "--limit",
            "1000",
        ).json()
        assert [f["id"] for f in got["items"]] == [r["id"] for r in rows if r["kind"] == kind]
    got = cli("--database-url", db_url, "failures", "list", "--not-retryable", "--json").json()
    assert [f["id"] for f in got["items"]] == [r["id"] for r in rows if not r["retryable"]]
    got = cli(
        "--database-url", db_url, "failures", "list", "--since", "5h", "--until", "1h", "--json"
    ).json()
    now = datetime.now(UTC)
    assert [f["id"] for f in got["items"]] == [
        r["id"]
        for r in rows
        if now - timedelta(hours=5) <= r["occurred_at"] < now - timedelta(hours=1)
    ]
    issue = rows[0]["issue_id"]
    got = cli("--database-url", db_url, "failures", "list", "--issue", str(issue), "--json").json()
    assert [f["id"] for f in got["items"]] == [r["id"] for r in rows if r["issue_id"] == issue]
    after = fx.rows(
        db_url, "SELECT md5(string_agg(f::text, ',' ORDER BY id)) AS h FROM jobsys_failures f"
    )
    assert before == after


def test_list_json_contract_pagination_and_group_by(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    rows = seed(db_url)
    page = cli("--database-url", db_url, "failures", "list", "--limit", "7", "--json")
    assert page.exit_code == 0 and page.stderr == ""
    data = page.json()
    assert (data["count"], data["total"], data["notes"]) == (7, len(rows), [])
    assert set(data["items"][0]) >= FAILURE_KEYS
    assert data["items"][0]["occurred_at"].endswith("Z") and data["items"][0]["retry_state"] == {}
    seen = [f["id"] for f in data["items"]]
    while data["next_before"] is not None:
        data = cli(
            "--database-url",
            db_url,
            "failures",
            "list",
            "--limit",
            "7",
            "--before",
            str(data["next_before"]),
            "--json",
        ).json()
        seen += [f["id"] for f in data["items"]]
    assert seen == [r["id"] for r in rows]
    groups = cli(
        "--database-url", db_url, "failures", "list", "--group-by", "kind", "--json"
    ).json()
    assert (groups["count"], groups["total"], groups["group_by"]) == (3, 3, "kind")
    assert {g["key"]: g["occurrences"] for g in groups["items"]} == {
        "runtime": 10,
        "transient": 10,
        "authentication": 10,
    }
    for group_by, column in (("queue", "queue"), ("issue", "issue_id")):
        groups = cli(
            "--database-url", db_url, "failures", "list", "--group-by", group_by, "--json"
        ).json()
        expected = fx.rows(
            db_url, f"SELECT {column} AS key, count(*) AS n FROM jobsys_failures GROUP BY 1"
        )
        assert {g["key"]: g["occurrences"] for g in groups["items"]} == {
            r["key"]: r["n"] for r in expected
        }
    # groups by fingerprint or issue name their issue and its title (JSON and table)
    titles = {r["id"]: r["title"] for r in fx.rows(db_url, "SELECT id, title FROM jobsys_issues")}
    newest = fx.rows(
        db_url,
        "SELECT fingerprint AS key, max(issue_id) AS issue FROM jobsys_failures GROUP BY 1",
    )
    by_fingerprint = cli(
        "--database-url", db_url, "failures", "list", "--group-by", "fingerprint", "--json"
    ).json()["items"]
    assert {g["key"]: (g["issue_id"], g["issue_title"]) for g in by_fingerprint} == {
        r["key"]: (r["issue"], titles[r["issue"]]) for r in newest
    }
    by_issue = cli(
        "--database-url", db_url, "failures", "list", "--group-by", "issue", "--json"
    ).json()["items"]
    assert all(g["issue_title"] == titles[g["key"]] for g in by_issue)
    text = cli("--database-url", db_url, "failures", "list", "--group-by", "fingerprint")
    header, *lines = text.stdout.splitlines()
    assert header.split() == ["fingerprint", "count", "accounts", "last", "seen", "issue", "title"]
    for group in by_fingerprint:
        [line] = [line for line in lines if line.startswith(group["key"])]
        assert f"  {group['issue_id']}  {group['issue_title']}" in line, line
    show = cli("--database-url", db_url, "failures", "show", str(rows[0]["id"]), "--json").json()
    assert FAILURE_KEYS | {"args", "traceback"} <= set(show)
    issues = cli("--database-url", db_url, "issues", "list", "--json").json()
    assert set(issues["items"][0]) >= ISSUE_KEYS
    detail = cli(
        "--database-url", db_url, "issues", "show", str(rows[0]["issue_id"]), "--json"
    ).json()
    assert set(detail) >= ISSUE_KEYS and detail["recent_failures"] and detail["accounts"]


def test_issue_lifecycle_through_the_cli(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    rows = seed(db_url)
    issue = str(rows[0]["issue_id"])
    url = ("--database-url", db_url)

    def open_ids() -> set[int]:
        return {i["id"] for i in cli(*url, "issues", "list", "--json").json()["items"]}

    assert int(issue) in open_ids()
    resolved = cli(*url, "issues", "resolve", issue, "--json").json()
    assert resolved["status"] == "resolved" and int(issue) not in open_ids()
    assert cli(*url, "issues", "reopen", issue).exit_code == 0  # a resolved one is not muted
    muted = cli(
        *url, "issues", "mute", issue, "--for", "2h", "--json", env={"JOBSYS_OPERATOR": "alice"}
    ).json()
    assert muted["status"] == "muted" and int(issue) not in open_ids()
    assert int(issue) in {
        i["id"] for i in cli(*url, "issues", "list", "--status", "muted", "--json").json()["items"]
    }
    until = datetime.fromisoformat(muted["muted_until"].replace("Z", "+00:00"))
    assert timedelta(minutes=119) < until - datetime.now(UTC) <= timedelta(hours=2)
    # who muted it is kept: nothing recorded it before
    assert muted["muted_by"] == "alice" and "muted_by" not in (muted["details"] or {})
    shown = cli(*url, "issues", "show", issue)
    assert re.search(r"^muted by +alice$", shown.stdout, re.M), shown.stdout
    reopened = cli(*url, "issues", "reopen", issue, "--json", env={"JOBSYS_OPERATOR": "bob"}).json()
    assert reopened["status"] == "open" and int(issue) in open_ids()
    assert reopened["muted_by"] is None
    # who reopened it is kept too: nothing recorded it before
    assert reopened["reopened_by"] == "bob" and "reopened_by" not in (reopened["details"] or {})
    shown = cli(*url, "issues", "show", issue)
    assert re.search(r"^reopened by +bob$", shown.stdout, re.M), shown.stdout
    assert cli(*url, "issues", "show", issue, "--json").json()["reopened_by"] == "bob"
    text = cli(*url, "issues", "resolve", issue)
    assert text.exit_code == 0 and f"issue {issue} resolved" in text.stderr
    resolved = cli(*url, "issues", "show", issue, "--json").json()
    assert resolved["reopened_by"] is None  # a resolve ends the reopen
    assert cli(*url, "issues", "reopen", issue).exit_code == 0
    muted = cli(*url, "issues", "mute", issue, "--for", "1h", "--json").json()
    assert muted["reopened_by"] is None  # and so does a mute


def test_a_resolved_issue_is_not_muted(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """Muting a resolved (healed) issue made it 'muted', and so open again once the mute
    ran out: back in `issues list`, the view of what needs someone (operator walk-through,
    story 11). It is refused, exit 2, and nothing is written."""
    rows = seed(db_url)
    issue = str(rows[0]["issue_id"])
    url = ("--database-url", db_url)
    assert cli(*url, "issues", "resolve", issue).exit_code == 0
    before = fx.rows(db_url, f"SELECT * FROM jobsys_issues WHERE id = {int(issue)}")
    for args in (("--for", "1s"), ("--for", "2h", "--json")):
        refused = cli(*url, "issues", "mute", issue, *args)
        assert (refused.exit_code, refused.stdout) == (2, ""), refused
        assert f"issue {issue} is resolved: nothing to mute" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert fx.rows(db_url, f"SELECT * FROM jobsys_issues WHERE id = {int(issue)}") == before
    listed = cli(*url, "issues", "list", "--json").json()["items"]
    assert int(issue) not in {i["id"] for i in listed}


def test_resolving_a_resolved_issue_or_reopening_an_open_one_writes_nothing(  # type: ignore[no-untyped-def]
    cli, db_url: str
) -> None:
    """A second `issues resolve` (a colleague a second later, or after the issue healed)
    said 'issue N resolved' and wrote its own name and time over who resolved it and when;
    `issues reopen` of an open issue said 'reopened' and recorded a reopen that never was
    (operator walk-through). Both now write nothing and say the issue is so already."""
    rows = seed(db_url)
    issue = str(rows[0]["issue_id"])
    url = ("--database-url", db_url)

    def stored() -> dict[str, Any]:
        return fx.rows(db_url, f"SELECT * FROM jobsys_issues WHERE id = {int(issue)}")[0]

    alice = {"JOBSYS_OPERATOR": "alice"}
    again = cli(*url, "issues", "reopen", issue, "--json", env={"JOBSYS_OPERATOR": "bob"})
    assert (again.exit_code, again.json()["changed"]) == (0, False), again
    assert again.json()["reopened_by"] is None and "reopened_by" not in stored()["details"]
    text = cli(*url, "issues", "reopen", issue)
    assert text.exit_code == 0
    assert f"issue {issue} is already open; nothing was changed" in text.stderr
    first = cli(*url, "issues", "resolve", issue, "--json", env=alice).json()
    assert (first["changed"], first["resolved_by"]) == (True, "alice")
    before = stored()
    text = cli(*url, "issues", "resolve", issue, env={"JOBSYS_OPERATOR": "bob"})
    assert text.exit_code == 0 and text.stdout == ""
    assert f"issue {issue} is already resolved (by alice at " in text.stderr, text.stderr
    assert "nothing was changed" in text.stderr
    second = cli(*url, "issues", "resolve", issue, "--json", env={"JOBSYS_OPERATOR": "bob"})
    assert second.json()["changed"] is False and second.json()["resolved_by"] == "alice"
    assert stored() == before
    # a healed issue keeps saying so: no operator's name over 'healed'
    healed_details = '{"resolved_reason": "healed"}'
    fx.rows(
        db_url,
        "UPDATE jobsys_issues SET resolved_by = 'auto', details = details || %s::jsonb"
        " WHERE id = %s RETURNING id",
        (healed_details, int(issue)),
    )
    healed = cli(*url, "issues", "resolve", issue, env=alice)
    assert "is already resolved (healed at " in healed.stderr, healed.stderr
    assert stored()["resolved_by"] == "auto"


def test_an_operators_resolve_does_not_read_healed(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """An open issue still carrying `resolved_reason: healed` (left by a mute of a healed
    issue before 57e7d06) read 'resolved (healed)' after an operator resolved it, and a
    second resolve said 'already resolved (healed ...)' (operator walk-through)."""
    rows = seed(db_url)
    issue = str(rows[0]["issue_id"])
    url = ("--database-url", db_url)
    fx.rows(
        db_url,
        "UPDATE jobsys_issues SET details = details || %s::jsonb WHERE id = %s RETURNING id",
        ('{"resolved_reason": "healed"}', int(issue)),
    )
    resolved = cli(*url, "issues", "resolve", issue, "--json", env={"JOBSYS_OPERATOR": "alice"})
    assert "resolved_reason" not in resolved.json()["details"]
    again = cli(*url, "issues", "resolve", issue)
    assert f"issue {issue} is already resolved (by alice at " in again.stderr, again.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["failures", "show", "123"], 1, "no failure 123"),
        (["issues", "show", "99"], 1, "no issue 99"),
        (["issues", "resolve", "99"], 1, "no issue 99"),
        (["failures", "list", "--before", "123"], 1, "no failure 123"),
    ],
)
def test_unknown_ids_exit_1(cli, db_url: str, args: list[str], code: int, message: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, *args)
    assert (result.exit_code, result.stdout) == (code, "")
    assert f"error: {message}" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["failures", "list", "--kind", "fatal"],
        ["failures", "list", "--since", "2 fortnights"],
        ["failures", "list", "--until", "yesterday"],
        ["failures", "list", "--since", "1h", "--until", "2h"],
        ["failures", "list", "--limit", "0"],
        ["failures", "list", "--group-by", "account"],
        ["failures", "list", "--issue", "abc"],
        ["failures", "show", "x1"],
        ["issues", "list", "--status", "closed"],
        ["issues", "list", "--kind", "nope"],
        ["issues", "mute", "1", "--for", "forever"],
    ],
)
def test_bad_input_exits_2_before_any_query(cli, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    # The database is unreachable: exit 2 (not 69) proves nothing was queried.
    result = cli("--database-url", UNREACHABLE, *args)
    assert result.exit_code == 2, result
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_an_unconfigured_queue_or_lane_is_called_out(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """A typo must not read as "no failures": listing says so on stderr (failures of a
    queue since removed stay findable); retrying refuses."""
    result = cli("--database-url", db_url, "failures", "list", "--queue", "profils")
    assert result.exit_code == 0
    assert "no failures match" in result.stderr
    assert (
        "note: --queue 'profils' is not a configured queue (did you mean 'profiles'?)"
        in result.stderr
    )
    result = cli("--database-url", db_url, "failures", "list", "--lane", "bse", "--json")
    assert result.json()["notes"][0].startswith("--lane 'bse' is not a configured lane")
    result = cli("--database-url", db_url, "failures", "list", "--queue", "profiles", "--json")
    assert result.json()["notes"] == []
    result = cli("--database-url", db_url, "retry", "--all", "--queue", "profils", "--yes")
    assert result.exit_code == 2
    assert "--queue 'profils' is not a configured queue (did you mean 'profiles'?)" in (
        result.stderr
    )


def test_failures_list_does_not_depend_on_healthy_config_files(cli, db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """During an incident a schedule typo must not take `failures list` down."""
    (tmp_path / "queues.yaml").write_text("base:\n  concurrency: 1\n  queues: [a]\n")
    (tmp_path / "schedule.yaml").write_text("entries:\n  x:\n    cron: '61 * * * *'\n")
    for extra in ([], ["--queue", "a"]):
        result = cli(
            "--database-url", db_url, "--config-dir", str(tmp_path), "failures", "list", *extra
        )
        assert result.exit_code == 0, result.stderr
    assert "--queue/--lane not checked against the configuration" in result.stderr
    result = cli("--database-url", db_url, "--config-dir", "/nonexistent", "failures", "list")
    assert result.exit_code == 0, result.stderr


def test_issues_list_help_names_every_kind(cli) -> None:  # type: ignore[no-untyped-def]
    """--kind's help left out schedule_entry, which the command takes."""
    from jobsys.issues.service import ISSUE_KINDS

    text = " ".join(cli("issues", "list", "--help").stdout.split())
    assert all(kind in text for kind in ISSUE_KINDS), text
