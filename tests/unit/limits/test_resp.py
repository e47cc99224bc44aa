"""The limiter's minimal RESP2 client: parser, pipelining, errors and timeouts, on a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from fastgw.resp import RespClient, RespError, _Incomplete, encode, parse

REPLY = b"*4\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n+OK\r\n$0\r\n\r\n"
VALUE = [42, b"hello", None, [b"OK", b""]]


def test_parse_every_split_point_is_incomplete_until_the_end():
    for cut in range(len(REPLY)):
        with pytest.raises(_Incomplete):
            parse(bytearray(REPLY[:cut]), 0)
    assert parse(bytearray(REPLY), 0) == (VALUE, len(REPLY))


def test_error_replies_and_encoding():
    value, _ = parse(bytearray(b"-NOSCRIPT No matching script\r\n"), 0)
    assert isinstance(value, RespError) and str(value).startswith("NOSCRIPT")
    assert encode(("SET", b"k", 1.5, 7)) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$1\r\n7\r\n"


def test_pipelined_calls_errors_and_a_frozen_redis(redis_server):
    async def run() -> None:
        client = RespClient(redis_server.url, timeout=0.3)
        replies = await asyncio.gather(*(client.call("INCRBY", "counter", n) for n in range(1, 101)))
        assert sorted(replies) == sorted(sum(range(1, n + 1)) for n in range(1, 101))  # one connection, in order
        assert await client.call("GET", "counter") == b"5050"
        with pytest.raises(RespError):
            await client.call("NOSUCHCOMMAND")
        assert await client.call("PING") == b"PONG"  # the connection survived the error reply
        redis_server.freeze()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await client.call("PING")
        finally:
            redis_server.thaw()
        assert await client.call("PING") == b"PONG"  # reconnected: the timed-out one was dropped
        await client.close()

    asyncio.run(run())
