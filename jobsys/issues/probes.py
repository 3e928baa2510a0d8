"""Service health (the seed's CheckAiMicroserviceHealthJob): HTTP checks of the services
in ``health.services``; an outage is ONE ``service_outage`` issue per service.

While it is open, transient failures naming that service (``TransientError(service=...)``
or ``@task(service=...)``) are counted in it instead of opening issues of their own
(see ``jobsys.failures.recorder``). On recovery it resolves itself; the automatic retry
(``jobsys.retry.auto``) then replays the failures whose ``issue_id`` is the outage, in
batches, and records ``jobsys_outage_replays.replayed_at``, whoever resolved the issue.

A check probes up to ``failures_before_outage`` times, so one lost packet is not an outage.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobsys.failures import fingerprint as fp
from jobsys.issues.health import Breach, apply

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.config.models import ServiceCheck

SERVICE_OUTAGE = "service_outage"
#: Pause between two probes of one check.
PROBE_SPACING_SECONDS = 1.0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


def display_url(url: str) -> str:
    """The URL without user info (a password in a health URL is never shown)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _get(url: str, timeout: float) -> int:
    headers = {"User-Agent": "jobsys-health"}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:  # urllib does not take user info in the URL itself
        token = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, parts.fragment)
        )
    request = urllib.request.Request(url, method="GET", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def http_probe(check: ServiceCheck) -> ProbeResult:
    try:
        status = await asyncio.to_thread(_get, check.url, check.timeout_seconds)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return ProbeResult(False, f"no answer ({type(reason).__name__}: {reason})")
    if status != check.expected_status:
        return ProbeResult(False, f"HTTP {status}, expected {check.expected_status}")
    return ProbeResult(True, f"HTTP {status}")


Probe = Callable[["ServiceCheck"], Awaitable[ProbeResult]]


async def probe_service(check: ServiceCheck, probe: Probe = http_probe) -> ProbeResult:
    result = ProbeResult(False, "not probed")
    for attempt in range(check.failures_before_outage):
        if attempt:
            await asyncio.sleep(PROBE_SPACING_SECONDS)
        result = await probe(check)
        if result.ok:
            return result
    return result


async def check_services(conn: Any, config: Config, probe: Probe = http_probe) -> dict[str, Any]:
    """Probe every configured service; open or resolve their outage issues."""
    services = config.queues.health.services
    names = sorted(services)
    results = await asyncio.gather(*(probe_service(services[n], probe) for n in names))
    breaches, service_of = [], {}
    for name, result in zip(names, results, strict=True):
        if result.ok:
            continue
        key = fp.service_outage(name)
        service_of[key] = name
        breaches.append(
            Breach(
                key,
                f"service {name} is down: {result.detail} at {display_url(services[name].url)}",
                None,
                "down",
                0,
                0,
            )
        )
    outcome = await apply(
        conn,
        SERVICE_OUTAGE,
        "service_outage:",
        breaches,
        service_of=service_of,
        resolved_details={"recovered_at": datetime.now(UTC).isoformat()},
    )
    outcome["services"] = {n: vars(r) for n, r in zip(names, results, strict=True)}
    return outcome
