#!/usr/bin/env python3
"""gRPC echo server and client for mesh's pod tests (raw bytes, no protobuf).

    grpc_echo.py server ADDR      serve /echo.Echo/{Chat,Say,Fail}; prints "listening ADDR"
    grpc_echo.py client ADDR N    run one call of each and print a canonical transcript
    grpc_echo.py say ADDR         one unary Say; prints "status OK" or "status CODE details ..."

The service is registered with grpc.method_handlers_generic_handler and no
(de)serializers, so messages are raw bytes and no generated code is needed:
  Chat  bidi-streaming echo: every request message comes back as one reply
  Say   unary echo
  Fail  aborts with status INTERNAL
The client's transcript holds only what the server sent back (reply bytes as hex, status
codes and details), so a direct run and a run through the mesh compare byte for byte.
Chat runs in lock-step (send one, read its reply, send the next), which only completes if
every hop streams instead of buffering the whole request.
"""

import queue
import sys
import time
from concurrent import futures

import grpc

SERVICE = "echo.Echo"
# Proxies in the environment would change the path under test.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
TIMEOUT_S = 10


def message(i):
    """Deterministic message i: a text prefix and i % 300 binary bytes (some empty-ish)."""
    return b"msg-%d:" % i + bytes((i * 7 + j) % 256 for j in range(i % 300))


def serve(addr):
    def chat(request_iterator, context):
        for msg in request_iterator:
            yield msg

    def say(request, context):
        return request

    def fail(request, context):
        context.abort(grpc.StatusCode.INTERNAL, "fail requested")

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(addr)
    if port == 0:
        sys.exit(f"grpc_echo: cannot bind {addr}")
    server.start()
    host = addr.rsplit(":", 1)[0]
    print(f"listening {host}:{port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)


def client(addr, n):
    out = []
    with grpc.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)

        # Chat, lock-step.
        chat = channel.stream_stream(f"/{SERVICE}/Chat")
        outbox = queue.Queue()
        done = object()

        def requests():
            while True:
                item = outbox.get()
                if item is done:
                    return
                yield item

        call = chat(requests(), timeout=TIMEOUT_S)
        replies = iter(call)
        for i in range(n):
            outbox.put(message(i))
            reply = next(replies)
            out.append(f"chat reply {i} {reply.hex()}")
        outbox.put(done)
        for extra in replies:
            out.append(f"chat unexpected {extra.hex()}")
        out.append(f"chat status {call.code().name}")

        say = channel.unary_unary(f"/{SERVICE}/Say")
        reply = say(b"say:" + bytes(range(256)), timeout=TIMEOUT_S)
        out.append(f"say reply {reply.hex()}")

        fail = channel.unary_unary(f"/{SERVICE}/Fail")
        try:
            reply = fail(b"please fail", timeout=TIMEOUT_S)
            out.append(f"fail unexpected reply {reply.hex()}")
        except grpc.RpcError as e:
            out.append(f"fail status {e.code().name} details {e.details()!r}")
    print("\n".join(out), flush=True)


def say_once(addr):
    with grpc.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        say = channel.unary_unary(f"/{SERVICE}/Say")
        try:
            reply = say(b"say once", timeout=TIMEOUT_S)
            print(f"status OK reply {reply!r}", flush=True)
        except grpc.RpcError as e:
            print(f"status {e.code().name} details {e.details()!r}", flush=True)


def main(argv):
    if len(argv) == 3 and argv[1] == "server":
        serve(argv[2])
    elif len(argv) == 4 and argv[1] == "client":
        client(argv[2], int(argv[3]))
    elif len(argv) == 3 and argv[1] == "say":
        say_once(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
