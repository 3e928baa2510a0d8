"""The worker's metrics endpoint: ``GET /metrics`` (Prometheus text, the same as
``jobsys metrics``) on ``metrics.host:metrics.port`` when a port is configured."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobsys.engine import pool as engine_pool

if TYPE_CHECKING:
    from jobsys.config import Config

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_SECONDS = 5.0


@dataclass
class MetricsEndpoint:
    config: Config
    host: str
    port: int
    name: str = "metrics_endpoint"
    bound_port: int | None = field(default=None, init=False)

    async def run(self, app: Any, stop: asyncio.Event) -> None:
        pool = engine_pool.of(app)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self._serve(pool, reader, writer)
            except Exception as exc:
                logger.warning("metrics request failed: %s", exc)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, self.host, self.port)
        self.bound_port = server.sockets[0].getsockname()[1]
        logger.info(
            "serving metrics on http://%s:%s/metrics",
            self.host,
            self.bound_port,
            extra={"action": "metrics_endpoint_started"},
        )
        async with server:
            await stop.wait()

    async def _serve(
        self, pool: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        from jobsys.metrics import exposition as metrics

        head = await asyncio.wait_for(
            reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_SECONDS
        )
        parts = head[:MAX_REQUEST_BYTES].split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) >= 2 else (b"", b"")
        if method != b"GET" or path not in (b"/metrics", b"/"):
            body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
        else:
            try:
                async with pool.connection() as conn:
                    text = metrics.render(await metrics.collect(conn, self.config))
                body, status, ctype = text.encode(), "200 OK", metrics.CONTENT_TYPE
            except Exception as exc:
                logger.warning("metrics collection failed: %s", exc)
                body, status, ctype = (
                    b"database unavailable\n",
                    "503 Service Unavailable",
                    "text/plain",
                )
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()


def services(config: Config) -> list[Any]:
    """The metrics endpoint of a worker process when ``metrics.port`` is set
    (``jobsys.app.worker_services``)."""
    if config.queues.metrics.port is None:
        return []
    return [MetricsEndpoint(config, config.queues.metrics.host, config.queues.metrics.port)]
