"""Pure failure logic: classification, retry policy, fingerprints, filters."""

from __future__ import annotations

import asyncio
import urllib.error
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobsys import AuthenticationError, TransientError
from jobsys.config import load
from jobsys.config.models import Classification
from jobsys.errors import JobTimeoutError, UsageError
from jobsys.failures import filters
from jobsys.failures import fingerprint as fp
from jobsys.failures.classify import classify
from jobsys.failures.policy import KindRetryStrategy
from jobsys.tasks import TaskSpec
from jobsys.timespec import parse_time

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
RULES = Classification(authentication=("myapp.LoginWall",))


class Status(Exception):
    def __init__(self, **attrs: object) -> None:
        super().__init__("upstream said no")
        for key, value in attrs.items():
            setattr(self, key, value)


class MyTransient(TransientError):
    pass


def spec(**kw: object) -> TaskSpec:
    return TaskSpec(name="t", func=lambda: None, queue="profiles", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "kind", "retryable", "reason"),
    [
        (AuthenticationError("log in"), "authentication", False, "exception"),
        (TransientError("later"), "transient", True, "exception"),
        (MyTransient("subclass"), "transient", True, "exception"),
        (JobTimeoutError("slow"), "transient", True, "timeout"),
        (ConnectionResetError("reset"), "transient", True, "exception"),  # subclass via MRO
        (TimeoutError(), "transient", True, "exception"),
        (TimeoutError(), "transient", True, "exception"),
        (urllib.error.URLError("down"), "transient", True, "exception"),
        (Status(status_code=401), "authentication", False, "exception"),
        (Status(status=403), "authentication", False, "exception"),
        (Status(response=SimpleNamespace(status_code=401)), "authentication", False, "exception"),
        (Status(status_code=503), "transient", True, "exception"),
        (Status(status_code=404), "runtime", True, "exception"),
        (KeyError("x"), "runtime", True, "exception"),
        (asyncio.CancelledError(), "transient", True, "aborted"),
    ],
)
def test_classify(exc: BaseException, kind: str, retryable: bool, reason: str) -> None:
    verdict = classify(exc, spec(), RULES)
    assert (verdict.kind, verdict.retryable, verdict.reason) == (kind, retryable, reason)


def test_configured_dotted_names_and_authentication_wins() -> None:
    LoginWall = type("LoginWall", (ConnectionError,), {"__module__": "myapp"})
    assert classify(LoginWall(), None, RULES).kind == "authentication"  # also a ConnectionError
    assert classify(LoginWall(), None, Classification()).kind == "transient"


def test_service_from_exception_or_task() -> None:
    assert classify(TransientError("x", service="ai"), spec(), RULES).service == "ai"
    assert classify(TransientError("x"), spec(service="ocr"), RULES).service == "ocr"
    assert classify(KeyError("x"), spec(), RULES).service is None


def test_retry_policy_per_kind() -> None:
    config = load(CONFIG_DIR)
    default = KindRetryStrategy(spec(), config)
    job = SimpleNamespace(attempts=0)
    assert default.get_retry_decision(exception=AuthenticationError("x"), job=job) is None
    assert default.get_retry_decision(exception=KeyError("x"), job=job) is None  # runtime: 0
    decision = default.get_retry_decision(exception=TransientError("x"), job=job)
    assert decision is not None and decision.retry_at is not None
    delay = (decision.retry_at - datetime.now(UTC)).total_seconds()
    assert 1.4 < delay <= 2.0  # base 2 s, jitter up to 25 % off
    later = default.get_retry_decision(
        exception=TransientError("x"), job=SimpleNamespace(attempts=3)
    )
    assert later is not None and later.retry_at is not None
    assert (later.retry_at - datetime.now(UTC)).total_seconds() > 11  # 16 s minus jitter
    assert (
        default.get_retry_decision(exception=TransientError("x"), job=SimpleNamespace(attempts=5))
        is None
    )
    custom = KindRetryStrategy(spec(max_attempts=2, transient_max_attempts=1), config)
    assert custom.get_retry_decision(exception=KeyError("x"), job=SimpleNamespace(attempts=1))
    assert (
        custom.get_retry_decision(exception=KeyError("x"), job=SimpleNamespace(attempts=2)) is None
    )
    assert (
        custom.get_retry_decision(exception=TransientError("x"), job=SimpleNamespace(attempts=1))
        is None
    )
    assert custom.get_retry_decision(exception=AuthenticationError("x"), job=job) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("account 12 failed", "account 9876 failed"),
        ("user 'alice' missing", "user 'bob' missing"),
        ('key "x" absent', 'key "yy" absent'),
        ("object 0xdeadbeef gone", "object 0x1234 gone"),
        ("id 3f2a9c1e8b7d6a5f bad", "id 0a1b2c3d4e5f6a7b bad"),
        (
            "job 123e4567-e89b-12d3-a456-426614174000 lost",
            "job 00000000-0000-0000-0000-000000000001 lost",
        ),
        ("mail a.b@example.com bounced", "mail zed@corp.example.org bounced"),
        ("GET https://api.x.com/v1/u/1?q=2 failed", "GET http://other/y failed"),
        ("worker host12:4242 died", "worker host7:1 died"),
    ],
)
def test_normalisation_does_not_split_groups(a: str, b: str) -> None:
    assert fp.normalise_message(a) == fp.normalise_message(b)
    assert fp.job_failure("t", "E", a, "m:f") == fp.job_failure("t", "E", b, "m:f")


def test_fingerprint_parts_that_do_split() -> None:
    base = fp.job_failure("t", "builtins.KeyError", "'x'", "app.mod:f")
    assert base != fp.job_failure("u", "builtins.KeyError", "'x'", "app.mod:f")
    assert base != fp.job_failure("t", "builtins.ValueError", "'x'", "app.mod:f")
    assert base != fp.job_failure("t", "builtins.KeyError", "'x'", "app.mod:g")
    assert base != fp.job_failure("t", "builtins.KeyError", "missing section", "app.mod:f")
    # Authentication: one issue across tasks.
    auth = fp.job_failure("t", "E", "log in", "a:f", "authentication")
    assert auth == fp.job_failure("u", "E", "log in", "b:g", "authentication")


def _raise_in_app() -> None:
    raise ValueError("x")


def test_application_frame_is_the_innermost_app_frame() -> None:
    try:
        asyncio.run(_async_wrapper())
    except ValueError as exc:
        frame = fp.application_frame(exc.__traceback__)
    assert frame is not None and frame.endswith(":_raise_in_app")


async def _async_wrapper() -> None:
    json_loads = __import__("json").loads
    try:
        json_loads("{bad")
    except ValueError:
        _raise_in_app()


def test_library_frames_are_not_application_frames() -> None:
    assert not fp.is_application_frame("jobsys.failures.capture", "/x/jobsys/failures/capture.py")
    assert not fp.is_application_frame("procrastinate.worker", "/x/procrastinate/worker.py")
    assert fp.is_application_frame("jobsys.demo.tasks", "/x/jobsys/demo/tasks.py")
    assert fp.is_application_frame("myapp.jobs", "/srv/myapp/jobs.py")
    assert not fp.is_application_frame("json.decoder", "<frozen json>")


def test_titles_are_short_and_readable() -> None:
    assert fp.job_failure_title("demo.refresh", "builtins.KeyError", "'edge'") == (
        "KeyError in demo.refresh: <str>"
    )
    # The title names the group the fingerprint makes, not the first member's ids.
    assert fp.job_failure_title(
        "demo.sync", "jobsys.errors.TransientError", "rate limited while serving account 37\nmore"
    ) == ("TransientError in demo.sync: rate limited while serving account <n>")
    assert fp.job_failure_title(
        "t", "jobsys.errors.AuthenticationError", "account 12 must log in", "authentication"
    ) == ("AuthenticationError: account <n> must log in")
    assert len(fp.job_failure_title("t", "E", "x" * 1000)) == fp.MAX_TITLE_CHARS


NOW = datetime(2026, 2, 20, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2026-02-19T10:00:00Z", datetime(2026, 2, 19, 10, tzinfo=UTC)),
        ("2026-02-19T10:00:00", datetime(2026, 2, 19, 10, tzinfo=UTC)),
        ("2026-02-19T12:00:00+02:00", datetime(2026, 2, 19, 10, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, "--since", NOW) == expected


@pytest.mark.parametrize("text", ["2 fortnights", "yesterday", "-2h", "0h", "", "2026-13-01"])
def test_bad_times_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_time(text, "--since", NOW)


def test_filter_validation() -> None:
    with pytest.raises(UsageError, match="--kind"):
        filters.failure_filters(kind="fatal")
    with pytest.raises(UsageError, match="--since must be before --until"):
        filters.failure_filters(since="1h", until="2h")
    with pytest.raises(UsageError):
        filters.check_limit(0)
    with pytest.raises(UsageError):
        filters.check_group_by("account")
    chosen = filters.failure_filters(task="t%", retryable=False, now=NOW)
    assert chosen.params() == {"task": "t%", "retryable": False}


def test_narrowed_adds_the_list_only_filters_checked_the_same_way() -> None:
    common = filters.failure_filters(task="t", since="1h", now=NOW)
    assert filters.narrowed(common, profile="p", retryable=True, before=9) == (
        filters.failure_filters(
            task="t", since="1h", profile="p", retryable=True, before=9, now=NOW
        )
    )
    assert filters.narrowed(common) == common
    with pytest.raises(UsageError, match="--profile must not be empty"):
        filters.narrowed(common, profile=" ")
    with pytest.raises(UsageError, match="--before '0' is not a failure id"):
        filters.narrowed(common, before=0)


def test_issue_kinds_mirror_the_model() -> None:
    from jobsys.issues.models import ISSUE_KINDS
    from jobsys.issues.service import ISSUE_KINDS as MIRROR

    assert MIRROR == ISSUE_KINDS
