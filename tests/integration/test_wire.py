"""services.queue.wire against a real redis-server: pipelined callers each get their own
replies, errors keep redis-py's types, and a connection that drops, times out or whose caller
gave up is made again without handing anyone a reply meant for someone else."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.queue import streams
from services.queue.wire import Wire, pack
from tests.support import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture()
def server(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "redis", password="s3cret")
    yield server
    server.stop()


def test_pack_writes_resp_arrays_of_bulk_strings() -> None:
    assert pack([["SET", b"k\r\n", 7], ["GET", "k"]]) == (
        b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n" b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    assert pack([["SET", "k", 0.1]]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n0.1\r\n"


def test_the_client_gives_server_user_password_database_and_tls() -> None:
    wire = Wire.like(streams.connect("redis://ops:p%40ss@cache.local:6390/3", 2.0))
    assert (wire.host, wire.port, wire.db, wire.username, wire.password, wire.tls, wire.timeout_s) == (
        "cache.local", 6390, 3, "ops", "p@ss", None, 2.0)
    assert Wire.like(streams.connect("rediss://h", 1.0)).tls is not None
    unix = Wire.like(streams.connect("unix:///run/redis.sock?db=2", 1.0))
    assert (unix.path, unix.db) == ("/run/redis.sock", 2)
    assert Wire.like(streams.connect("redis://:pw@127.0.0.1:7000/2", 4.0), timeout_s=0.5, blocking=True).timeout_s == 0.5


def test_concurrent_callers_share_one_connection_and_get_their_own_replies(server: RedisServer) -> None:
    async def main() -> list[list[object]]:
        wire = Wire.like(streams.connect(server.url.replace("/0", "/5"), 5.0))
        await wire.execute(["FLUSHDB"])
        answers = await asyncio.gather(*(wire.execute(["SET", f"k{i}", i], ["INCRBY", f"k{i}", 100], ["GET", f"k{i}"])
                                         for i in range(50)))
        where = await wire.execute(["CLIENT", "INFO"])
        await wire.aclose()
        return [*answers, where]

    *answers, where = asyncio.run(main())
    assert answers == [[b"OK", 100 + i, str(100 + i).encode()] for i in range(50)]
    assert b" db=5 " in where[0]  # authenticated, and on the database the URL names


def test_an_error_reply_raises_and_the_connection_stays_usable(server: RedisServer) -> None:
    async def main() -> list[object]:
        wire = Wire.like(streams.connect(server.url, 5.0))
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await wire.execute(["SET", "s", "x"], ["LPUSH", "s", "y"])
        with pytest.raises(ResponseError, match="NOSCRIPT"):
            await wire.execute(["EVALSHA", "0" * 40, 0])
        after = await wire.execute(["GET", "s"])
        await wire.aclose()
        return after

    assert asyncio.run(main()) == [b"x"]


def test_a_wrong_password_is_refused_not_retried(server: RedisServer) -> None:
    async def main() -> None:
        wire = Wire.like(streams.connect(server.url.replace("s3cret", "wrong"), 2.0))
        with pytest.raises(ResponseError):
            await wire.execute(["PING"])
        await wire.aclose()

    asyncio.run(main())


def test_a_killed_connection_is_made_again_on_the_next_call(server: RedisServer) -> None:
    async def main() -> tuple[object, object]:
        admin = Wire.like(streams.connect(server.url, 5.0))
        wire = Wire.like(streams.connect(server.url, 5.0))
        (first_id,) = await wire.execute(["CLIENT", "ID"])
        await admin.execute(["CLIENT", "KILL", "ID", first_id])
        (second_id,) = await wire.execute(["CLIENT", "ID"])  # the write or the read fails, the retry reconnects
        await wire.aclose()
        await admin.aclose()
        return first_id, second_id

    first_id, second_id = asyncio.run(main())
    assert second_id != first_id


def test_redis_down_raises_connection_error_after_the_retries(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "gone")
    url = server.url
    server.stop()

    async def main() -> None:
        wire = Wire.like(streams.connect(url, 0.5))
        with pytest.raises(RedisConnectionError):
            await wire.execute(["PING"])

    asyncio.run(main())


def test_a_reply_later_than_the_timeout_raises_and_the_next_caller_gets_its_own(server: RedisServer) -> None:
    async def main() -> tuple[list[object], bool, list[object], bool]:
        client = streams.connect(server.url, 0.3)
        # A connection the server has been silent on for the whole timeout is given up.
        silent = Wire.like(client)
        silent.retries = 0
        with pytest.raises(RedisTimeoutError):
            await silent.execute(["BLPOP", "nothing", 2])  # the server answers after 2 s
        first = silent._protocol
        after_silence = await silent.execute(["ECHO", "a"])
        # A connection the server spoke on within the timeout keeps the slow reply's slot: the
        # callers behind it are not failed, and the late reply is read and dropped, not handed
        # to the next caller.
        busy = Wire.like(client)
        busy.retries = 0
        await busy.execute(["PING"])
        protocol = busy._protocol
        slow = asyncio.ensure_future(busy.execute(["BLPOP", "nothing", 1]))
        await asyncio.sleep(0.25)
        assert protocol is not None
        protocol.heard = time.monotonic()  # as if other replies had just come in
        with pytest.raises(RedisTimeoutError):
            await slow
        kept = busy._protocol is protocol and not protocol.lost
        busy.timeout_s = 5.0
        after_slow = await busy.execute(["ECHO", "b"])  # comes after the BLPOP's nil, then its own
        await silent.aclose()
        await busy.aclose()
        return after_silence, first is None, after_slow, kept

    after_silence, dropped, after_slow, kept = asyncio.run(main())
    assert after_silence == [b"a"] and dropped
    assert after_slow == [b"b"] and kept


def test_a_caller_that_gives_up_never_gets_its_reply_read_as_the_next_callers(server: RedisServer) -> None:
    async def main() -> tuple[list[object], list[object], bool]:
        client = streams.connect(server.url, 5.0)
        # On a shared connection the cancelled caller's reply is read into its own slot and dropped.
        shared = Wire.like(client)
        (before,) = await shared.execute(["CLIENT", "ID"])
        gone = asyncio.ensure_future(shared.execute(["ECHO", "cancelled"]))
        await asyncio.sleep(0)  # written, waiting for its reply
        gone.cancel()
        after = await shared.execute(["ECHO", "b"], ["CLIENT", "ID"])
        # On a blocking connection a cancelled read would hold it until its BLOCK ends: it is
        # made again, and the next call does not wait 2 s behind the read.
        reader = Wire.like(client, timeout_s=0.5, blocking=True)
        reader.retries = 0
        slow = asyncio.ensure_future(reader.execute(["BLPOP", "nothing", 2]))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        quick = await reader.execute(["ECHO", "c"])
        await shared.aclose()
        await reader.aclose()
        return after, quick, after[1] == before

    after, quick, same_connection = asyncio.run(main())
    assert after[0] == b"b" and same_connection
    assert quick == [b"c"]


def test_callers_that_find_no_connection_share_one_connect(server: RedisServer) -> None:
    async def main() -> set[object]:
        wire = Wire.like(streams.connect(server.url, 5.0))
        ids = await asyncio.gather(*(wire.execute(["CLIENT", "ID"]) for _ in range(20)))
        await wire.aclose()
        return {reply[0] for reply in ids}

    assert len(asyncio.run(main())) == 1


def test_a_server_still_loading_its_data_is_retried() -> None:
    """LOADING (a Redis reading its append-only file after a restart) is retried with backoff,
    as redis-py does; other error replies are not."""
    async def main() -> tuple[list[object], int]:
        answers = [b"-LOADING Redis is loading the dataset in memory\r\n", b"+PONG\r\n"]
        asked = 0

        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal asked
            try:
                while await reader.read(1024):
                    writer.write(answers[min(asked, len(answers) - 1)])
                    asked += 1
                    await writer.drain()
            finally:
                writer.close()
                await writer.wait_closed()
                done.set()

        fake = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = fake.sockets[0].getsockname()[1]
        wire = Wire("127.0.0.1", port, timeout_s=2.0)
        reply = await wire.execute(["PING"])
        await wire.aclose()
        await asyncio.wait_for(done.wait(), 5)
        fake.close()
        await fake.wait_closed()
        return reply, asked

    reply, asked = asyncio.run(main())
    assert reply == [b"PONG"] and asked == 2


def test_a_unix_socket_server_is_reached_as_redis_py_reaches_it(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket",
                               str(socket_path), "--dir", str(tmp_path), "--save", ""],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

        async def main() -> tuple[list[object], list[object]]:
            client = streams.connect(f"unix://{socket_path}?db=4", 5.0)
            wire = Wire.like(client)
            first = await wire.execute(["SET", "k", "v"], ["CLIENT", "INFO"])
            second_client = Wire.like(client)
            second = await second_client.execute(["GET", "k"])
            await wire.aclose()
            await second_client.aclose()
            await client.aclose()
            return first, second

        first, second = asyncio.run(main())
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert first[0] == b"OK" and b" db=4 " in first[1]
    assert second == [b"v"]


def test_bench_roundtrip_measures_both_transports(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m bench.roundtrip`, small: one redis-server on TCP and a unix socket, a row each."""
    from bench import roundtrip
    from tests.support import free_port

    assert roundtrip.main(["--calls", "50", "--rounds", "1", "--port", str(free_port())]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| loopback") or line.startswith("| unix")]
    assert len(rows) == 2
    for row in rows:
        client, server, wall = (float(cell) for cell in row.strip("|").split("|")[1:])
        assert client > 0 and wall > 0 and server >= 0
