#!/usr/bin/env python3
"""Raw TCP clients for mesh's pod tests.

    tcp_client.py echo ADDR SIZE     send SIZE deterministic bytes, half-close, read to EOF
    tcp_client.py banner ADDR SIZE   read the server's banner first (send nothing until it
                                     arrives), then the same as echo

Prints a canonical transcript (banner, counts, SHA-256 of what came back) and, last, a
line "sent S received R" so a test can check the proxies' byte counters.
The payload starts with bytes no HTTP method starts with, so protocol detection must
choose opaque TCP.
"""

import hashlib
import socket
import sys
import threading

TIMEOUT_S = 10


def payload(size):
    return bytes((i * 31 + 7) % 256 for i in range(size))


def run(mode, addr, size):
    host, port = addr.rsplit(":", 1)
    out = []
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        received = bytearray()
        if mode == "banner":
            while not received.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
            out.append(f"banner {bytes(received).hex()}")
        banner_len = len(received)

        data = payload(size)
        # Read concurrently, so neither side's buffers can fill up and stall the echo.
        def reader():
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        t.join(TIMEOUT_S)
        if t.is_alive():
            sys.exit("tcp_client: timed out waiting for EOF")
        echoed = bytes(received[banner_len:])
        out.append(f"echo equal {echoed == data} len {len(echoed)}")
        out.append(f"echo sha256 {hashlib.sha256(echoed).hexdigest()}")
        out.append(f"sent {len(data)} received {len(received)}")
    print("\n".join(out), flush=True)


def main(argv):
    if len(argv) == 4 and argv[1] in ("echo", "banner"):
        run(argv[1], argv[2], int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
