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


def pty_run(env: dict[str, str], args: list[str], size: tuple[int, int]) -> tuple[int, list[str]]:
    """``jobsys ARGS`` in a pty of ``size``: its exit code and the lines it wrote
    (stdout and stderr) as written, before the terminal folds any."""
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
    text = ANSI.sub("", child.before or "").replace("\r\n", "\n")
    return child.exitstatus, text.splitlines()


def screen(env: dict[str, str], args: list[str], size: tuple[int, int]) -> list[str]:
    status, lines = pty_run(env, args, size)
    assert status == 0, lines
    return lines


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
    table = [lines[start], *rows]
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


def pty_lines(env: dict[str, str], args: list[str], width: int = 80) -> list[str]:
    """What ``jobsys ARGS`` writes to a terminal ``width`` wide, whatever its exit code."""
    return pty_run(env, args, (width, 24))[1]


def assert_folded_at_words(lines: list[str], long: str, width: int = 80) -> list[str]:
    """No line wider than the terminal (it would fold it mid-word), and ``long`` shown
    with every word whole, in order, over consecutive lines; returns those lines."""
    assert all(len(line) <= width for line in lines), [ln for ln in lines if len(ln) > width]
    words = long.split()
    tokens = [token for line in lines for token in line.split()]
    starts = [i for i, token in enumerate(tokens) if token.endswith(words[0])]
    assert any(tokens[i + 1 : i + len(words)] == words[1:] for i in starts), (long, lines)
    return [line for line in lines if any(word in line.split() for word in words[-3:])]


def test_show_rows_verdicts_and_notes_fold_at_words_at_80_columns(
    populated: str, tmp_path: Path
) -> None:
    """Text outside tables at 80 columns: a ``show`` row longer than the terminal goes
    on under its value column, verdict lines and stderr notes fold at spaces; nothing
    is written wider than the terminal, so the terminal never breaks a word."""
    env = jobsys_env(populated, tmp_path / "home")
    issue = sql(populated, "SELECT id FROM jobsys_issues")[0]["id"]
    lines = pty_lines(env, ["issues", "show", str(issue)])
    title = next(i for i, line in enumerate(lines) if line.startswith("title "))
    value_column = lines[title].index("AuthenticationError")
    assert_folded_at_words(lines, LONG_MESSAGE)
    # the continuation is indented under the value, not at column 0
    assert lines[title + 1].startswith(" " * value_column), lines
    assert lines[title + 1][value_column] != " ", lines

    failure = sql(populated, "SELECT id FROM jobsys_failures WHERE kind = 'authentication'")
    failure_id = str(failure[0]["id"])
    assert_folded_at_words(pty_lines(env, ["failures", "show", failure_id]), LONG_MESSAGE)

    verdicts = pty_lines(env, ["retry", failure_id])
    refused = next(line for line in verdicts if line.startswith(f"failure {failure_id} "))
    assert_folded_at_words(verdicts, refused)

    dry_run = pty_lines(env, ["retry", "--all", "--kind", "authentication", "--dry-run"])
    assert all(len(line) <= 80 for line in dry_run), dry_run

    note = pty_lines(env, ["failures", "list", "--queue", "profils"])
    said = next(i for i, line in enumerate(note) if "did you mean" in line)
    assert all(len(line) <= 80 for line in note), note
    assert note[said].endswith("(did you mean 'profiles'?);"), note
    assert note[said + 1].startswith("  configured: "), note  # a message's continuation


def test_piped_show_rows_and_messages_stay_one_line(cli, populated: str) -> None:  # type: ignore[no-untyped-def]
    """Piped output is not fitted, even with COLUMNS=80: a ``show`` row and a note
    are one line each."""
    issue = sql(populated, "SELECT id FROM jobsys_issues")[0]["id"]
    narrow = {"COLUMNS": "80"}
    shown = cli("--database-url", populated, "issues", "show", str(issue), env=narrow)
    title = f"AuthenticationError in {LONG_TASK}: {LONG_MESSAGE}"
    assert any(ln.startswith("title ") and title in ln for ln in shown.stdout.splitlines())
    note = cli("--database-url", populated, "failures", "list", "--queue", "profils", env=narrow)
    assert "(did you mean 'profiles'?); configured: sync, " in note.stderr


def test_queues_at_80_columns_show_who_paused_why_and_for_how_long(
    cli, db_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Story 9 at 80 columns: the table's cell says how long a pause has left, and a
    line of its own under the table says who paused the queue, why, and until when."""
    pause = ("--database-url", db_url, "queues", "pause", "story_downloads", "--yes")
    alice = {"JOBSYS_OPERATOR": "alice"}
    assert cli(*pause, "--for", "30m", "--reason", "upstream 429", env=alice).exit_code == 0
    lines = pty_lines(jobsys_env(db_url, tmp_path / "home"), ["queues"])
    assert all(len(line) <= 80 for line in lines), lines
    row = next(line for line in lines if line.startswith("story_downloads "))
    assert re.search(r"  (29|30)m left(  |$)", row), lines
    said = [line for line in lines if line.startswith("story_downloads: ")]
    assert len(said) == 1 and re.fullmatch(
        r"story_downloads: queue paused \d+s ago by alice: upstream 429 \(resumes in (29|30)m\)",
        said[0],
    ), lines
    piped = cli("--database-url", db_url, "queues").stdout  # piped: the whole pause in its cell
    assert re.search(r"by alice: upstream 429 \(resumes in (29|30)m\)  ", piped), piped
    assert "story_downloads: " not in piped


@pytest.mark.parametrize("variable", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_piped_output_asking_for_colour_is_not_cut_to_a_width(  # type: ignore[no-untyped-def]
    cli, populated: str, variable: str
) -> None:
    """FORCE_COLOR / TTY_COMPATIBLE (a CI log) make Rich call any stream a terminal; a
    piped ``show`` row, note and table still keep whole lines (they were folded at 80)."""
    env = {"COLUMNS": "80", variable: "1"}
    issue = sql(populated, "SELECT id FROM jobsys_issues")[0]["id"]
    shown = cli("--database-url", populated, "issues", "show", str(issue), env=env)
    title = f"AuthenticationError in {LONG_TASK}: {LONG_MESSAGE}"
    lines = ANSI.sub("", shown.stdout).splitlines()
    assert any(ln.startswith("title ") and title in ln for ln in lines), lines
    note = cli("--database-url", populated, "failures", "list", "--queue", "profils", env=env)
    assert "(did you mean 'profiles'?); configured: sync, " in ANSI.sub("", note.stderr)
    listed = cli("--database-url", populated, "issues", "list", env=env)
    assert LONG_MESSAGE in ANSI.sub("", listed.stdout)
