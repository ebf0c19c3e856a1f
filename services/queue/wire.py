"""The hot path's Redis connection: commands written in one piece, replies parsed by hiredis.

redis-py serves everything else (the catalogue, heartbeats, take-overs, statistics). The few
commands every request makes (the enqueue script, the reply read, the replica's group read and
its reply + ACK pipeline) go through `Wire`, because redis-py spends more Python per command
than the command costs: a py-spy profile of the gateway at concurrency 64 had a third of its
busy samples under redis-py (retry wrapper, connection pool, command packing, pipeline object,
response callbacks), see docs/profiles.md.

One `Wire` is one connection with pipelining: concurrent callers each write their commands at
once and their replies come back in order. A blocking command (XREAD BLOCK) holds the
connection, so a blocking reader gets a `Wire` of its own. Failures keep redis-py's meaning, so
callers handle one set of errors: an error reply raises ResponseError (LOADING is retried), a
connection that drops or a reply that takes longer than the timeout raises ConnectionError or
TimeoutError after the same retries as services.queue.streams.connect (10, 20 and 40 ms).

What a failure does to the connection: a dropped one is made again on the next call, by one
connect attempt that every waiting caller shares. A reply later than the timeout, or one whose
caller was cancelled, keeps its slot in the queue of replies (read and dropped when it comes),
so the callers behind it are neither failed nor sent again; the connection is given up only when
the server has been silent on it for the whole timeout, or when it carries blocking reads (a
cancelled or overdue read would hold it until its BLOCK ends). It speaks TCP (redis://),
TLS (rediss://) and unix sockets (unix://), as the redis-py client it copies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int | float
Command = Sequence[Arg]

RETRIES = 3
BACKOFF_S = 0.01  # doubled per retry, as streams.connect's ExponentialBackoff(base=0.01)
BACKOFF_CAP_S = 0.25


def pack(commands: Sequence[Command]) -> bytes:
    """Commands in RESP, as one buffer."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, float):
                data = repr(arg).encode()
            else:
                data = b"%d" % arg
            out.append(b"$%d\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """Replies, in order, to whoever wrote the commands they answer."""

    def __init__(self) -> None:
        self._parser = hiredis.Reader(replyError=ResponseError)
        self._waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any]]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.heard = time.monotonic()  # when the server last sent anything (or the connection was made)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.heard = time.monotonic()

    def send(self, data: bytes, replies: int) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self.lost or self.transport is None:
            future.set_exception(RedisConnectionError("connection to Redis lost"))
            return future
        self._waiting.append((future, replies, []))
        self.transport.write(data)
        return future

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        try:
            self._parser.feed(data)
            while self._waiting:
                reply = self._parser.gets()
                if reply is False:  # RESP2 has no booleans: False means "incomplete"
                    return
                future, expected, replies = self._waiting[0]
                replies.append(reply)
                if len(replies) == expected:
                    self._waiting.popleft()
                    if not future.done():  # its caller may have given up or timed out: dropped
                        future.set_result(replies)
        except hiredis.ProtocolError as err:
            self.abort(RedisConnectionError(f"Redis protocol error: {err}"))

    def abort(self, err: Exception) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(err)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self._waiting:
            future, _, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc if isinstance(exc, RedisConnectionError)
                                     else RedisConnectionError(f"connection to Redis lost: {exc}"))


class Wire:
    """One pipelined connection to the server a redis-py client talks to (`Wire.like`)."""

    def __init__(self, host: str, port: int, db: int = 0, username: str | None = None, password: str | None = None,
                 timeout_s: float = 5.0, tls: ssl.SSLContext | None = None, retries: int = RETRIES,
                 blocking: bool = False, path: str | None = None) -> None:
        """`blocking`: this connection carries blocking reads (see the module's notes on cancelling);
        `path`: a unix socket to connect to instead of host and port."""
        self.host, self.port, self.db, self.path = host, port, db, path
        self.username, self.password = username, password
        self.timeout_s, self.tls, self.retries = timeout_s, tls, retries
        self.blocking = blocking
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None  # the one connect attempt under way
        self._generation = 0  # bumped by drop(): a connect that began before it is not installed

    @classmethod
    def like(cls, client: aioredis.Redis, timeout_s: float | None = None, blocking: bool = False) -> Wire:
        """A connection to the same server (TCP, TLS or unix socket), database and user as
        `client`, with its timeout; ValueError for a connection class it does not know."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        timeout = timeout_s if timeout_s is not None else float(kwargs.get("socket_timeout") or 5.0)
        if issubclass(pool.connection_class, UnixDomainSocketConnection):
            return cls("localhost", 0, int(kwargs.get("db", 0)), kwargs.get("username"), kwargs.get("password"),
                       timeout, blocking=blocking, path=kwargs["path"])
        if not issubclass(pool.connection_class, Connection):
            raise ValueError(f"the queue's connections take redis://, rediss:// or unix:// URLs, "
                             f"not a {pool.connection_class.__name__}")
        tls = None
        if issubclass(pool.connection_class, SSLConnection):
            tls = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
            if kwargs.get("ssl_certfile"):
                tls.load_cert_chain(kwargs["ssl_certfile"], kwargs.get("ssl_keyfile"), kwargs.get("ssl_password"))
            if kwargs.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
            elif kwargs.get("ssl_check_hostname") is False:
                tls.check_hostname = False
        return cls(kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)), int(kwargs.get("db", 0)),
                   kwargs.get("username"), kwargs.get("password"), timeout, tls, blocking=blocking)

    async def execute(self, *commands: Command) -> list[Any]:
        """Every command's reply, in one round trip; the first error reply is raised (a server
        still loading its data, LOADING, is retried as redis-py does)."""
        data = pack(commands)
        for attempt in range(self.retries + 1):
            try:
                replies = await self._round_trip(data, len(commands))
                loading = next((r for r in replies if isinstance(r, ResponseError) and str(r).startswith("LOADING")), None)
                if loading is not None:
                    raise BusyLoadingError(str(loading))
                break
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == self.retries:
                    raise
                await asyncio.sleep(min(BACKOFF_CAP_S, BACKOFF_S * 2 ** attempt))
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def _round_trip(self, data: bytes, count: int) -> list[Any]:
        protocol = await self._connected()
        future = protocol.send(data, count)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout_s, _time_out, future, self.timeout_s)
        try:
            return await future
        except asyncio.CancelledError:
            if self.blocking:  # its read would hold the connection until the BLOCK ends
                self.drop()
            raise
        except RedisTimeoutError:
            # A slow reply keeps its slot (read and dropped when it comes), so the callers
            # behind it are not failed and sent again; a connection the server has been silent
            # on for the whole timeout (or that carries a blocking read) is given up.
            if self.blocking or time.monotonic() - protocol.heard >= self.timeout_s:
                self.drop()
            raise
        except RedisConnectionError:
            self.drop()
            raise
        finally:
            timer.cancel()

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        attempt = self._connecting
        if attempt is None or attempt.done():  # one attempt at a time, shared by whoever waits for it
            attempt = self._connecting = asyncio.ensure_future(self._connect(self._generation))
        return await asyncio.shield(attempt)

    async def _connect(self, generation: int) -> _Protocol:
        loop = asyncio.get_running_loop()
        where = self.path or f"{self.host}:{self.port}"
        try:
            connecting = (loop.create_unix_connection(_Protocol, self.path) if self.path
                          else loop.create_connection(_Protocol, self.host, self.port, ssl=self.tls))
            _, fresh = await asyncio.wait_for(connecting, self.timeout_s)
        except (OSError, asyncio.TimeoutError) as err:
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {err}") from err
        try:
            hello: list[Command] = []
            if self.password is not None:
                hello.append(["AUTH", self.username, self.password] if self.username else ["AUTH", self.password])
            if self.db:
                hello.append(["SELECT", self.db])
            if hello:
                try:
                    replies = await asyncio.wait_for(fresh.send(pack(hello), len(hello)), self.timeout_s)
                except asyncio.TimeoutError as err:
                    raise RedisTimeoutError(f"no reply from Redis within {self.timeout_s:g} s") from err
                for reply in replies:
                    if isinstance(reply, ResponseError):  # a wrong password: not retried
                        raise reply
            if generation != self._generation:
                raise RedisConnectionError("connection dropped while it was made")
        except BaseException:
            fresh.abort(RedisConnectionError("connection set-up failed"))
            raise
        self._protocol = fresh
        return fresh

    def drop(self) -> None:
        """Close the connection, and any being made (the next call makes a new one)."""
        self._generation += 1
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.lost:
            protocol.abort(RedisConnectionError("connection dropped"))

    async def aclose(self) -> None:
        self.drop()


def _time_out(future: asyncio.Future[list[Any]], timeout_s: float) -> None:
    if not future.done():
        future.set_exception(RedisTimeoutError(f"no reply from Redis within {timeout_s:g} s"))
