"""Every list command in a real pty at 80x24, 120x40 and 200x50: one line per row,
no line wider than the terminal, no token split (each word on screen is a whole value
of its row, a relative time, or ends in an ellipsis)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pexpect
import psycopg
import pytest
from _retry_support import bulk_failed_jobs, make_issue, sql
from live_support import jobsys_env

SIZES = [(80, 24), (120, 40), (200, 50)]
LONG_TASK = "demo.scan_recent_profile_posts"
LONG_MESSAGE = "Instagram asks account 33 to log in again before it serves the recent posts"
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
RELATIVE = re.compile(r"^(now|ago|in|\d+[smhd]|[\d.]+s|\d+m\d\ds|\d+h\d\dm|[\d.]+d)$")
# command, the words the header starts with at every size
COMMANDS: list[tuple[list[str], list[str]]] = [
    (["failures", "list"], ["id", "when", "task", "error"]),
    (["failures", "list", "--group-by", "task"], ["task", "count"]),
    (["issues", "list"], ["id", "title", "count"]),
    (["jobs", "list"], ["id", "status", "task"]),
    (["schedule", "list"], ["name", "cron", "next", "run"]),
    (["pipelines", "list"], ["id", "name", "entity", "status"]),
    (["fanout", "list"], ["id", "entry", "status"]),
    (["queues"], ["queue", "lane", "waiting", "running"]),
    (["workers", "list"], ["host", "pid", "state", "running"]),
]


@pytest.fixture
def populated(db_url: str) -> str:
    issue = make_issue(db_url)
    sql(
        db_url,
        "UPDATE jobsys_issues SET title = %s, occurrences = 12 WHERE id = %s",
        (f"AuthenticationError in {LONG_TASK}: {LONG_MESSAGE}", issue),
    )
    bulk_failed_jobs(db_url, 12, kind="authentication", issue_id=issue)
    bulk_failed_jobs(db_url, 3, kind="transient")
    sql(
        db_url,
        "UPDATE jobsys_failures SET task = %s, message = %s, error_class = "
        "'jobsys.errors.AuthenticationError' WHERE kind = 'authentication'",
        (LONG_TASK, LONG_MESSAGE),
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        for n in range(3):
            conn.execute(
                "INSERT INTO jobsys_pipelines (name, entity, status) VALUES "
                "('demo.story_media', %s, 'running')",
                (f"story:{n}",),
            )
        conn.execute(
            "INSERT INTO jobsys_fanout_runs (entry, status, source, task, queue, batch_size, "
            "cursor, batches_done, items_enqueued) VALUES "
            "('continuous_account_processing', 'running', 'demo_accounts.id', "
            "'demo.process_account', 'sync', 100, 4200, 42, 4200)"
        )
        conn.execute(
            "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes, concurrency, "
            "status, started_at, last_heartbeat) VALUES ('worker-host-7:4242:x', "
            """'worker-host-7', 4242, ARRAY['base', 'ai_face_queue'], """
            """'{"base": 10, "ai_face_queue": 2}', 'running', now(), now())"""
        )
    return db_url


def screen(env: dict[str, str], args: list[str], size: tuple[int, int]) -> list[str]:
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "jobsys", *args],
        env=env,
        dimensions=(size[1], size[0]),
        encoding="utf-8",
        timeout=30,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    text = ANSI.sub("", child.before or "").replace("\r\n", "\n")
    return text.splitlines()


def _tokens(item: dict[str, Any]) -> set[str]:
    words: set[str] = {"-", "yes", "no"}
    for value in item.values():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(", ", ": "))
        words.update(str(value).split())
    if "slots" in item:  # workers list's derived columns
        from jobsys.cli.workers import _lanes_text, _running_text

        words.update(_lanes_text(item).split() + _running_text(item).split())
    if item.get("error_class"):  # failures list's error column: "KeyError: message"
        words.add(str(item["error_class"]).rsplit(".", 1)[-1] + ":")
    return words


def check_table(lines: list[str], items: list[dict[str, Any]], header: list[str], width: int):  # type: ignore[no-untyped-def]
    start = next(i for i, line in enumerate(lines) if line.split()[: len(header)] == header)
    rows = lines[start + 1 : start + 1 + len(items)]
    table = [lines[start], *rows]  # (messages on stderr are one line each, folded by the tty)
    assert all(len(line) <= width for line in table), [ln for ln in table if len(ln) > width]
    after = lines[start + 1 + len(items) :]
    # one line per row: the line after the last row is not a continuation of a row
    assert all(not line.startswith(" ") or not line.strip() for line in after[:1]), after
    for item, row in zip(items, rows, strict=True):
        whole = _tokens(item)
        for token in row.split():
            assert token in whole or token.endswith("…") or RELATIVE.match(token), (
                token,
                row,
                item,
            )
    return rows


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_list_command_fits_the_terminal(
    populated: str, tmp_path: Path, size: tuple[int, int]
) -> None:
    from jobsys.cli.main import main

    env = jobsys_env(populated, tmp_path / "home")
    for args, header in COMMANDS:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["--database-url", populated, *args, "--json"]) == 0
        items = json.loads(out.getvalue())["items"]
        assert items, args
        lines = screen(env, args, size)
        rows = check_table(lines, items, header, size[0])
        assert len(rows) == len(items)
        key = {
            "when": "id",
            "title": "id",
            "status": "id",
            "entity": "id",
            "lane": "queue",
            "pid": "host",
        }
        first = items[0][key.get(header[1], header[0].replace("task", "key"))]
        assert rows[0].split()[0] == str(first).split()[0], (args, rows[0])
    wide = screen(env, ["failures", "list", "--wide"], size)
    assert any(LONG_MESSAGE in line for line in wide)  # --wide: complete values


def test_piped_lists_keep_complete_values(cli, populated: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", populated, "failures", "list")
    assert result.exit_code == 0
    assert f"AuthenticationError: {LONG_MESSAGE}" in result.stdout
    assert "…" not in result.stdout
    assert re.search(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", result.stdout)  # absolute times
    issues = cli("--database-url", populated, "issues", "list")
    assert LONG_MESSAGE in issues.stdout
