"""A TCP proxy the tests control, to put a network between a worker and PostgreSQL.

It listens on 127.0.0.1 and forwards every connection to the server (TCP host:port
or a Unix socket), in its own thread and event loop. Modes, switched at any time:

- ``pass()``: forward both ways (the default);
- ``freeze()``: stop forwarding without closing anything: bytes are read from the
  sockets (the kernel acknowledges them) and held; new connections are accepted and
  left waiting. What a SIGSTOPped proxy or a silent partition looks like: hangs, not
  refusals. ``pass()`` delivers what was held;
- ``drop()``: close every connection and refuse new ones (accepted, then closed at once);
- ``reset()``: abort every open connection (TCP RST), keep accepting new ones;
- ``freeze_open()``: ``freeze()`` for the connections open now only, new ones pass (a
  client's cancel request reaches the server, its answer on the old connection does
  not). ``pass_()`` delivers what was held.

A side that closes ends both (TCP RST) unless the proxy is ``graceful``: then the other
side gets the end of stream (a FIN), as from a server that closed the connection (a
cancel request's answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

CHUNK = 65536


class ChaosProxy:
    def __init__(self, db_url: str, *, port: int = 0, graceful: bool = False) -> None:
        self._graceful = graceful
        params = conninfo_to_dict(db_url)
        host = str(params.get("host") or "127.0.0.1")
        server_port = int(params.get("port") or 5432)
        self._unix = f"{host}/.s.PGSQL.{server_port}" if host.startswith("/") else None
        self._target = (host, server_port)
        self._db_params = params
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._flowing: asyncio.Event | None = None
        self._dropping = False
        self._conns: set[asyncio.StreamWriter] = set()
        #: Each forwarded connection's own switch (``freeze_open``), by client writer.
        self._open: dict[asyncio.StreamWriter, asyncio.Event] = {}
        self._server: Any = None
        self.connections = 0
        self.port = 0

    # --- life -----------------------------------------------------------------------

    def __enter__(self) -> ChaosProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()  # its self-pipe too: no unclosed loop left to the collector

    @property
    def url(self) -> str:
        """The database URL through this proxy."""
        params = {**self._db_params, "host": "127.0.0.1", "port": str(self.port)}
        return make_conninfo("", **params)

    # --- modes ------------------------------------------------------------------------

    def pass_(self) -> None:
        self._call(self._set(flowing=True, dropping=False))

    def freeze(self) -> None:
        self._call(self._set(flowing=False, dropping=False))

    def drop(self) -> None:
        self._call(self._set(flowing=True, dropping=True, close=True))

    def reset(self) -> None:
        self._call(self._set(flowing=True, dropping=False, close=True))

    def freeze_open(self) -> None:
        self._call(self._freeze_open())

    # --- inside the proxy's loop --------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self._server.close()
        for writer in list(self._conns):
            _abort(writer)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _freeze_open(self) -> None:
        for event in self._open.values():
            event.clear()

    async def _set(self, *, flowing: bool, dropping: bool, close: bool = False) -> None:
        assert self._flowing is not None
        self._dropping = dropping
        for event in self._open.values():
            event.set()
        if close:
            for writer in list(self._conns):
                _abort(writer)
            self._conns.clear()
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if self._dropping:
            _abort(writer)
            return
        self.connections += 1
        self._conns.add(writer)
        try:
            await self._flowing.wait()  # frozen: the client waits for the server forever
            if self._unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _abort(writer)
            self._conns.discard(writer)
            return
        self._conns.add(up_writer)
        own = self._open[writer] = asyncio.Event()
        own.set()
        await asyncio.gather(
            self._pump(reader, up_writer, writer, own),
            self._pump(up_reader, writer, up_writer, own),
        )
        for end in (writer, up_writer):
            self._conns.discard(end)
            end.close()
        self._open.pop(writer, None)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        own: asyncio.Event,
    ) -> None:
        assert self._flowing is not None
        ended = False  # the reader's side closed and the proxy is graceful
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    ended = self._graceful
                    break
                await self._flowing.wait()  # frozen: held here, never refused
                await own.wait()
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if ended:
                with contextlib.suppress(Exception):
                    writer.write_eof()
            else:
                _abort(writer)
                _abort(other)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN: the peer learns at once."""
    with contextlib.suppress(Exception):
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
