"""A loopback TCP proxy the fault tests control: forward, cut, stall, slow, resume.

``FaultProxy`` listens on a free loopback port and forwards every connection
to ``upstream`` (a MariaDB, an OIDC provider). It runs its own event loop in
a daemon thread, so the test's load and an in-thread gateway can share it;
the control methods are thread-safe and bounded:

- ``cut()``: abort every open connection (both sides see the link drop);
- ``down()``: cut, and abort each new connection as soon as it is accepted;
- ``stall()``: stop moving bytes in both directions but keep sockets open
  (new connections are accepted and held too): a peer that stops answering;
- ``slow(delay)``: forward, each chunk ``delay`` seconds late;
- ``resume()``: forward normally again (held bytes flow on, as after a
  network partition heals).

``watch`` counts matches of a byte pattern in what clients send (e.g. HTTP
request lines), so a test can tell how often the upstream was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Self

CONTROL_TIMEOUT = 10.0
CHUNK = 65536


class FaultProxy:
    """One loopback proxy; use as a context manager (``with FaultProxy(...) as proxy``)."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 0, *, watch: bytes | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0  # connections accepted since start
        self.watch_hits = 0
        self._watch = re.compile(watch) if watch is not None else None
        self._mode = "forward"
        self._delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free loopback port (``self.port``)."""
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        """Stop listening, drop every connection, stop the thread (bounded)."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CONTROL_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``forward``, ``slow``, ``stall`` or ``down``."""
        return self._mode

    @property
    def open_links(self) -> int:
        """Client connections open through the proxy now."""
        return len(self._links)

    def cut(self) -> int:
        """Abort every open connection; return how many were cut. New ones are still accepted."""
        return int(self._call(self._cut()))

    def down(self) -> int:
        """Cut every connection and abort new ones on accept, until ``resume``."""
        self._set("down", 0.0)
        return self.cut()

    def stall(self) -> None:
        """Stop forwarding in both directions; keep every socket open."""
        self._set("stall", 0.0)

    def slow(self, delay: float) -> None:
        """Forward each chunk ``delay`` seconds late."""
        self._set("slow", delay)

    def resume(self) -> None:
        """Forward normally again."""
        self._set("forward", 0.0)

    # -- inside the proxy's loop -------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=CONTROL_TIMEOUT)

    def _set(self, mode: str, delay: float) -> None:
        async def apply() -> None:
            self._mode, self._delay = mode, delay
            assert self._flowing is not None
            if mode == "stall":
                self._flowing.clear()
            else:
                self._flowing.set()

        self._call(apply())

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._mode = "down"
        assert self._flowing is not None
        self._flowing.set()  # stalled pipes wake up, find their link cut and end
        await self._cut()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=CONTROL_TIMEOUT / 2)
            for task in pending:
                task.cancel()

    async def _cut(self) -> int:
        links = list(self._links)
        for client, upstream in links:
            _abort(client)
            if upstream is not None:
                _abort(upstream)
        self._links.clear()
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "down":
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), CONTROL_TIMEOUT)
        except (OSError, TimeoutError):
            _abort(writer)  # upstream down: the client sees its link drop
            return
        if self._mode == "down":  # went down while this link was being made
            _abort(writer)
            _abort(up_writer)
            return
        link = (writer, up_writer)
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            pipes = [
                asyncio.create_task(self._pipe(reader, up_writer, watch=True)),
                asyncio.create_task(self._pipe(up_reader, writer, watch=False)),
            ]
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pending:
                pipe.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # closing: asyncio's stream callback would report a cancelled handler as an error
        finally:
            self._links.discard(link)
            self._tasks.discard(task)
            _abort(writer)
            _abort(up_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool) -> None:
        flowing = self._flowing
        assert flowing is not None
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    return
                if watch and self._watch is not None:
                    self.watch_hits += len(self._watch.findall(data))
                if self._delay:
                    await asyncio.sleep(self._delay)
                await flowing.wait()
                writer.write(data)
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # An RST, as when a link is really cut, rather than an orderly FIN.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@contextlib.contextmanager
def fault_proxy(upstream_host: str = "127.0.0.1", upstream_port: int = 0, **kwargs: Any) -> Iterator[FaultProxy]:
    """A started proxy to ``upstream``, closed when the block ends."""
    with FaultProxy(upstream_host, upstream_port, **kwargs) as proxy:
        yield proxy
