"""The canary: a secret in nested args and in an exception message appears nowhere."""

from __future__ import annotations

import asyncio
import json
import logging

import failures_support as fx
import psycopg
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)
from rt_support import report

from jobsys.failures import logredact

CANARY = "canary-7f3a9c2e-SECRET"
COOKIE = "sid-cookie-4d4d4d4d"

pytestmark = pytest.mark.usefixtures("spool_home")


async def test_canary_appears_nowhere(db_url: str, cli, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    config = fx.repo_config()
    logredact.install(config)  # what a worker process does once logging is configured
    app = fx.build_app(db_url, config)
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN jobsys_events")
    payloads: list[str] = []

    async def listen() -> None:
        async for note in listener.notifies():
            payloads.append(note.payload)

    listening = asyncio.create_task(listen())
    args = {
        "account_id": 9,
        "login": {"logins": [{"user": "ana", "token": CANARY}], "Session-Cookie": COOKIE},
    }
    async with app.open_async():
        await fx.defer(app, [("fx.canary", args)])
        await fx.run_worker(app, config, queues=["profiles"])
    for _ in range(50):
        if len(payloads) >= 2:
            break
        await asyncio.sleep(0.05)
    listening.cancel()
    await listener.close()

    (failure,) = fx.rows(db_url, "SELECT * FROM jobsys_failures")
    assert failure["args"]["login"]["logins"][0]["token"] == "[REDACTED]"
    assert failure["args"]["login"]["logins"][0]["user"] == "ana"
    assert failure["message"] == "login rejected, token [REDACTED] is not valid"
    texts = {
        "failures table": json.dumps(fx.rows(db_url, "SELECT * FROM jobsys_failures"), default=str),
        "issues table": json.dumps(fx.rows(db_url, "SELECT * FROM jobsys_issues"), default=str),
        "logs": caplog.text + "".join(str(vars(r)) for r in caplog.records),
        "live payloads": "".join(payloads),
    }
    assert len(payloads) >= 2 and "job_failures_changed" in texts["live payloads"]
    url = ("--database-url", db_url)
    fid, iid = str(failure["id"]), str(failure["issue_id"])
    for command in (
        ["failures", "list"],
        ["failures", "list", "--json"],
        ["failures", "show", fid],
        ["failures", "show", fid, "--json"],
        ["issues", "list"],
        ["issues", "list", "--json"],
        ["issues", "show", iid],
        ["issues", "show", iid, "--json"],
    ):
        result = await asyncio.to_thread(cli, *url, *command)
        assert result.exit_code == 0, (command, result.stderr)
        texts[" ".join(command)] = result.stdout + result.stderr
    assert "rejected" in texts["failures show " + fid + " --json"]  # the output is real
    assert "Traceback" in texts["failures show " + fid]
    report(
        "secrets-canary",
        places_checked=len(texts),
        canary_found=sum(CANARY in t for t in texts.values()),
        cookie_found=sum(COOKIE in t for t in texts.values()),
    )
    for where, text in texts.items():
        assert CANARY not in text, where
        assert COOKIE not in text, where
    assert "fx.canary" in caplog.text  # the logs were captured, the secret cut out
