"""The interactive dashboard driven with keys in a real pty, its screen read through a
terminal emulator (pyte): select a failure, retry it after the dry-run preview,
resolve an issue; the database shows both. ``--help`` never imports Textual."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pyte
import pytest
from _retry_support import bulk_failed_jobs, make_issue, sql
from live_support import jobsys_env
from rt_support import wait_until

from jobsys.cli import failures

HERE = Path(__file__).resolve().parent
SIZE = (120, 40)


class Screen:
    """A pty running ``jobsys dashboard`` and the screen it draws."""

    def __init__(self, env: dict[str, str], size: tuple[int, int] = SIZE) -> None:
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "jobsys", "dashboard"],
            env=env,
            dimensions=(size[1], size[0]),
            timeout=30,
        )
        self.screen = pyte.Screen(*size)
        self.stream = pyte.ByteStream(self.screen)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, *needles: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(pexpect.TIMEOUT):
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            if all(n in self.text() for n in needles):
                return self.text()
        raise AssertionError(f"{needles} not on screen:\n{self.text()}")

    def lines_with(
        self, needle: str, settled: Callable[[list[str]], bool], timeout: float = 20
    ) -> list[str]:
        """The screen's lines holding ``needle`` once ``settled(lines)`` holds: a pane
        is drawn over several writes, so one read can catch it half redrawn."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.wait_for(needle).splitlines() if needle in line]
            if settled(lines) or time.monotonic() > deadline:
                return lines
            with contextlib.suppress(pexpect.TIMEOUT):
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))

    def press(self, keys: str) -> None:
        self.child.send(keys)


def test_select_retry_after_the_preview_and_resolve_with_keys(db_url: str, tmp_path: Path) -> None:
    issue = make_issue(db_url)
    sql(db_url, "UPDATE jobsys_issues SET title = 'KeyError in t_retry.work' WHERE id = %s",
        (issue,))  # fmt: skip
    [failure] = bulk_failed_jobs(db_url, 1, issue_id=issue)
    env = jobsys_env(db_url, tmp_path / "home")
    env.update(JOBSYS_APP="jobsys.demo.tasks,_retry_support", PYTHONPATH=str(HERE))
    screen = Screen(env)
    try:
        screen.wait_for("1 lanes", "2 failures", "3 issues", "open issues 1")
        screen.press("2")  # the failures pane; its first row is selected
        screen.wait_for("t_retry.work", "KeyError: edge_followed_by")
        screen.press("\r")  # its detail: what `failures show` shows
        screen.wait_for(f"id: {failure}", "message: edge_followed_by", "retry: no retry")
        screen.press("\r")  # closes it (escape + a key would read as alt+key)
        screen.wait_for("t_retry.work", "KeyError: edge_followed_by")
        screen.press("r")  # retry: the dry-run verdict first, nothing changed yet
        screen.wait_for("dry run:", f"failure {failure} (job", "would be retried", "retry 1 of 1?")
        assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]
        screen.press("y")
        wait_until(lambda: sql(db_url, "SELECT decision FROM jobsys_retry_events")
                   == [{"decision": "retried"}], 15, "the retry")  # fmt: skip
        screen.press("3")  # the issues pane
        screen.wait_for("KeyError in t_retry.work")
        screen.press("s")
        screen.wait_for(f"resolve issue {issue}: KeyError in t_retry.work?")
        screen.press("y")
        status = "SELECT status FROM jobsys_issues WHERE id = %s"
        wait_until(lambda: sql(db_url, status, (issue,)) == [{"status": "resolved"}], 15,
                   "the resolve")  # fmt: skip
        screen.press("?")
        screen.wait_for("p         pause / resume a schedule entry")
        screen.press("\r")
        screen.press("q")
        screen.child.expect(pexpect.EOF)
    finally:
        screen.child.close(force=True)
    assert screen.child.exitstatus == 0


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_pane_row_is_one_line_at_each_size(
    db_url: str, tmp_path: Path, size: tuple[int, int]
) -> None:
    issue = make_issue(db_url)
    long_title = "AuthenticationError: Instagram asks account <n> to log in again " * 3
    sql(db_url, "UPDATE jobsys_issues SET title = %s WHERE id = %s", (long_title, issue))
    failures = bulk_failed_jobs(db_url, 3, issue_id=issue)
    screen = Screen(jobsys_env(db_url, tmp_path / "home"), size)
    try:
        text = screen.wait_for("open issues 1", "1 lanes")
        assert "waiting 0  running 0  60s: " in text.splitlines()[0]
        screen.press("2")

        def ids(lines: list[str]) -> list[str]:
            return sorted(line.split()[0] for line in lines)

        want = sorted(str(f) for f in failures)
        rows = screen.lines_with("t_retry.work", lambda lines: ids(lines) == want)
        # one line per failure, each starting with its whole id
        assert ids(rows) == want, rows
        screen.press("3")
        text = screen.wait_for("AuthenticationError: Instagram")
        [row] = [line for line in text.splitlines() if "AuthenticationError" in line]
        assert row.split()[0] == str(issue)
        assert "…" in row or long_title.strip() in row  # cut with an ellipsis, not wrapped
        screen.press("q")
        screen.child.expect(pexpect.EOF)
    finally:
        screen.child.close(force=True)


def test_a_refused_action_changes_nothing(db_url: str, tmp_path: Path) -> None:
    issue = make_issue(db_url)
    screen = Screen(jobsys_env(db_url, tmp_path / "home"))
    try:
        screen.wait_for("open issues 1")
        screen.press("3")
        screen.wait_for("test issue")
        screen.press("s")
        screen.wait_for(f"resolve issue {issue}")
        screen.press("n")
        screen.wait_for("cancelled: nothing was changed")
        screen.press("q")
        screen.child.expect(pexpect.EOF)
    finally:
        screen.child.close(force=True)
    assert sql(db_url, "SELECT status FROM jobsys_issues") == [{"status": "open"}]


def failures_pane_at_80x24(db_url: str, tmp_path: Path, count: int) -> Screen:
    """The dashboard at 80x24 on its failures pane: ``count`` failures of one issue,
    each message ten words long."""
    issue = make_issue(db_url)
    bulk_failed_jobs(db_url, count, issue_id=issue)
    sql(db_url, "UPDATE jobsys_failures SET message = repeat('edge_followed_by ', 10)")
    screen = Screen(jobsys_env(db_url, tmp_path / "home"), size=(80, 24))
    screen.wait_for("1 lanes", "2 failures")
    screen.press("2")
    return screen


def test_a_pane_longer_than_the_screen_scrolls_inside_it_at_80x24(
    db_url: str, tmp_path: Path
) -> None:
    """40 failures with long messages on an 80x24 terminal: the failures pane scrolls
    by itself, so the header keeps one line and each row's error ends in an ellipsis
    before the pane's scrollbar instead of running past the right edge."""
    screen = failures_pane_at_80x24(db_url, tmp_path, 40)
    try:
        screen.wait_for("t_retry.work", "KeyError: edge_follow")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the pane is drawn down to the footer
            text = screen.wait_for("t_retry.work")
            rows = [line for line in screen.screen.display if "t_retry.work" in line]
            if len(rows) >= 15:
                break
        lines = screen.screen.display
        assert len(rows) >= 15, text
        assert "waiting 0" in lines[0], text
        assert lines[1].startswith("? keys"), text  # the header did not wrap
        titles = {c.title for c in failures.LIST_COLUMNS}
        header = next(line for line in lines if line.startswith(" id "))
        # every column shown whole, none cut by the scrollbar or the right edge
        assert set(re.split(r"\s{2,}", header.strip())) <= titles, text
        assert len(header.rstrip()) <= 78, text  # the last two columns are the scrollbar's
        for row in rows:
            assert "KeyError: edge_follow" in row and "…" in row, text
            # Nothing of the row in the last two columns, where the scrollbar's thumb
            # may be drawn (it was, once, on a CI run: '33      ▁▁').
            assert not re.search(r"[\w…:.]", row[78:]), text
        screen.press("q")
        screen.child.expect(pexpect.EOF)
    finally:
        screen.child.close(force=True)
    assert screen.child.exitstatus == 0


def test_help_does_not_import_textual() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jobsys", "dashboard", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--watch" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert not any(name.split(".")[0] == "textual" for name in imported)


def test_the_help_fits_its_box_at_80x24(db_url: str, tmp_path: Path) -> None:
    """``?`` on an 80x24 terminal: every line of the help is shown whole, as written
    (a description too long for the box goes on under its column, not at column 0)."""
    from jobsys.cli._tui import HELP

    screen = Screen(jobsys_env(db_url, tmp_path / "home"), size=(80, 24))
    try:
        screen.wait_for("? keys")
        screen.press("?")
        text = screen.wait_for("this help", "Every action asks first")
        box = [  # the help box's rows, between its borders
            line[line.index("│") + 1 : line.rindex("│")].rstrip()
            for line in screen.screen.display
            if line.count("│") >= 2
        ]
        # The box's height may still include blank padding rows at the moment the text
        # arrives (seen once in CI); what is checked is the lines, whole and as written.
        while box and not box[-1]:
            box.pop()
        assert box == HELP.splitlines(), text
    finally:
        screen.child.close(force=True)


def test_a_detail_folds_a_long_value_under_itself_at_80x24(db_url: str, tmp_path: Path) -> None:
    """A failure's detail on an 80x24 terminal: its long message goes on under the
    value (after ``message: ``), never at the box's left edge."""
    screen = failures_pane_at_80x24(db_url, tmp_path, 1)
    try:
        screen.wait_for("t_retry.work")
        screen.press("\r")
        deadline = time.monotonic() + 20
        while True:  # the box is drawn over several writes
            text = screen.wait_for("message: edge_followed_by", "account id:")
            box = [
                line[line.index("│") + 1 : line.rindex("│")]
                for line in screen.screen.display
                if line.count("│") >= 2
            ]
            rows = [row.split(":")[0] for row in box]
            if ("message" in rows and "account id" in rows) or time.monotonic() > deadline:
                break
        start, end = rows.index("message"), rows.index("account id")
        assert end - start >= 2, text  # folded over at least two more lines
        for row in box[start + 1 : end]:
            assert row.startswith(" " * 9 + "edge_followed_by"), text
        words = " ".join(row.strip(" ▂▁▇█▆▅▄▃") for row in box[start:end]).split()[1:]
        assert words == ["edge_followed_by"] * 10, text  # every word whole
    finally:
        screen.child.close(force=True)
