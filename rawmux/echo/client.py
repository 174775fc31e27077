"""The line client: each line read from stdin goes to the server, and the
echo comes back to stdout.  Works at a terminal and with piped input; at EOF
it shuts down its sending side, prints what is still coming, and exits."""

from __future__ import annotations

import socket
import sys
from typing import BinaryIO


def run(host: str, port: int, stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None, timeout: float = 10.0) -> int:
    """Echo stdin's lines through the server at (host, port) to stdout;
    returns the exit status (0)."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    with socket.create_connection((host, port), timeout=timeout) as sock:
        for line in iter(stdin.readline, b""):
            sock.sendall(line)
            want = len(line)
            while want:
                chunk = sock.recv(min(want, 65536))
                if not chunk:
                    raise ConnectionError("server closed the connection")
                stdout.write(chunk)
                want -= len(chunk)
            stdout.flush()
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):    # anything still in flight
            stdout.write(chunk)
        stdout.flush()
    return 0
