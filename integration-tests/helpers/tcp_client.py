#!/usr/bin/env python3
"""Raw TCP clients for mesh's pod tests.

    tcp_client.py echo ADDR SIZE     send SIZE deterministic bytes, half-close, read to EOF
    tcp_client.py banner ADDR SIZE   read the server's banner first (send nothing until it
                                     arrives), then the same as echo
    tcp_client.py hold ADDR          send a line, print "echoed" once it comes back, then
                                     keep the connection open until the other side ends
                                     it (printing "closed ...") or HOLD_S pass

Prints a canonical transcript (banner, counts, SHA-256 of what came back) and, last, a
line "sent S received R" so a test can check the proxies' byte counters. A connection
that fails (reset, say) ends the transcript with "connection failed (ERRORS) received R"
and exits 1.
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
        errors = []
        # Read concurrently, so neither side's buffers can fill up and stall the echo.
        def reader():
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    received.extend(chunk)
            except OSError as e:
                errors.append(f"reading: {e.__class__.__name__}: {e}")

        t = threading.Thread(target=reader)
        t.start()
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(f"writing: {e.__class__.__name__}: {e}")
        t.join(TIMEOUT_S)
        if t.is_alive():
            sys.exit("tcp_client: timed out waiting for EOF")
        if errors:
            out.append(f"connection failed ({'; '.join(errors)}) received {len(received)}")
            print("\n".join(out), flush=True)
            sys.exit(1)
        echoed = bytes(received[banner_len:])
        out.append(f"echo equal {echoed == data} len {len(echoed)}")
        out.append(f"echo sha256 {hashlib.sha256(echoed).hexdigest()}")
        out.append(f"sent {len(data)} received {len(received)}")
    print("\n".join(out), flush=True)


# How long `hold` keeps a connection that nobody closes.
HOLD_S = 120


def hold(addr):
    host, port = addr.rsplit(":", 1)
    line = b"hold this connection\n"
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.sendall(line)
        received = b""
        while len(received) < len(line):
            chunk = sock.recv(4096)
            if not chunk:
                sys.exit(f"tcp_client: closed after {len(received)} bytes, before the echo")
            received += chunk
        print("echoed", flush=True)
        sock.settimeout(HOLD_S)
        try:
            chunk = sock.recv(4096)
            print("closed by peer" if not chunk else f"unexpected {chunk.hex()}", flush=True)
        except socket.timeout:
            print(f"still open after {HOLD_S}s", flush=True)
        except OSError as e:
            print(f"closed with error {e.__class__.__name__}", flush=True)


def main(argv):
    if len(argv) == 4 and argv[1] in ("echo", "banner"):
        run(argv[1], argv[2], int(argv[3]))
    elif len(argv) == 3 and argv[1] == "hold":
        hold(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
