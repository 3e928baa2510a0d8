"""Configuration is loaded at the edge: the jobs domain's deferring never loads it
itself; the public ``jobsys.defer`` (the application's edge) loads the environment's
configuration on the first defer that nothing configured, and hands it down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobsys
from jobsys.errors import UsageError
from jobsys.jobs import defer as defer_module

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def unconfigured() -> Iterator[None]:
    defer_module.deactivate()
    yield
    defer_module.deactivate()


async def test_the_jobs_domain_does_not_load_configuration_behind_the_callers_back() -> None:
    with pytest.raises(UsageError, match="no configuration to defer with"):
        await defer_module.defer("demo.process_account", {"account_id": 1})
    assert not defer_module.configured()


def test_the_public_api_configures_from_the_environment_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBSYS_CONFIG_DIR", str(REPO / "config"))
    loaded: list[Any] = []
    monkeypatch.setattr(defer_module, "configure", lambda config, url=None: loaded.append(config))
    planned: list[str] = []
    monkeypatch.setattr(defer_module, "defer_sync", lambda task, *a, **k: planned.append(task))
    jobsys.defer_sync("demo.process_account", {"account_id": 1})
    assert planned == ["demo.process_account"]
    (config,) = loaded
    assert "default" in config.all_queues
