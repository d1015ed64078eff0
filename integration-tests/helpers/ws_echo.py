#!/usr/bin/env python3
"""WebSocket echo server and client for mesh's pod tests.

    ws_echo.py server ADDR       echo every message; prints "listening ADDR"
    ws_echo.py client URL N      send N messages (alternating text and binary, one large),
                                 print a canonical transcript

The transcript holds only what came back (kind and hex of each reply, then the close
code), so a direct run and a run through the mesh compare byte for byte. The client runs
in lock-step, so an HTTP/1 upgrade that a proxy does not turn into a byte stream hangs
instead of passing.
"""

import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

TIMEOUT_S = 10
LARGE = 200 * 1024


def message(i):
    """Deterministic message i: even ones are text, odd ones binary; message 3 is large."""
    size = LARGE if i == 3 else 1 + (i * 37) % 500
    if i % 2 == 0:
        return "".join(chr(ord("a") + (i + j) % 26) for j in range(size))
    return bytes((i * 13 + j) % 256 for j in range(size))


async def run_server(addr):
    host, port = addr.rsplit(":", 1)

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async with serve(echo, host, int(port), max_size=None, compression=None) as server:
        bound = server.sockets[0].getsockname()
        print(f"listening {bound[0]}:{bound[1]}", flush=True)
        await asyncio.get_running_loop().create_future()


async def run_client(url, n):
    out = []
    async with connect(
        url, proxy=None, max_size=None, compression=None, open_timeout=TIMEOUT_S
    ) as ws:
        for i in range(n):
            msg = message(i)
            await ws.send(msg)
            reply = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
            if isinstance(reply, str):
                out.append(f"text {i} {reply.encode().hex()}")
            else:
                out.append(f"binary {i} {reply.hex()}")
        await ws.close()
        out.append(f"close {ws.close_code}")
    print("\n".join(out), flush=True)


def main(argv):
    if len(argv) == 3 and argv[1] == "server":
        asyncio.run(run_server(argv[2]))
    elif len(argv) == 4 and argv[1] == "client":
        asyncio.run(run_client(argv[2], int(argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
