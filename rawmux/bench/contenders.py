"""The echo servers rawmux is compared with, each as small as it can be.

    python -m rawmux.bench.contenders NAME [PORT]

NAME: ``selectors`` (a plain loop on the stdlib's selectors.DefaultSelector),
``asyncio-streams``, ``asyncio-protocol``, ``uvloop-protocol``.  Each prints
"listening on HOST:PORT" and exits 0 on SIGTERM or SIGINT.
"""

import asyncio
import selectors
import signal
import socket
import sys


def _listener(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    print("listening on 127.0.0.1:%d" % sock.getsockname()[1], flush=True)
    return sock


def selectors_server(port):
    """What a careful programmer writes on the stdlib: DefaultSelector,
    recv_into one buffer, EVENT_WRITE only while output is pending."""
    sel = selectors.DefaultSelector()
    listener = _listener(port)
    sel.register(listener, selectors.EVENT_READ)
    buf = bytearray(65536)
    view = memoryview(buf)
    pending: dict[socket.socket, bytearray] = {}

    def close(sock):
        sel.unregister(sock)
        pending.pop(sock, None)
        sock.close()

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for key, events in sel.select():
            # Only sockets are registered (a cast() would cost a call here).
            sock: socket.socket = key.fileobj     # type: ignore[assignment]
            if sock is listener:
                for _ in range(64):
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                if events & selectors.EVENT_WRITE:
                    out = pending[sock]
                    del out[:sock.send(out)]
                    if not out:
                        del pending[sock]
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    n = sock.recv_into(buf)
                    if n == 0:
                        close(sock)
                        continue
                    if sock in pending:
                        pending[sock] += view[:n]
                        continue
                    sent = sock.send(view[:n])
                    if sent < n:
                        pending[sock] = bytearray(view[sent:n])
                        sel.modify(sock, selectors.EVENT_READ
                                   | selectors.EVENT_WRITE)
            except BlockingIOError:
                pass
            except OSError:
                close(sock)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.transport.write(data)


async def _serve_asyncio(port, protocol):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set_result, None)
    sock = _listener(port)
    if protocol:
        server = await loop.create_server(EchoProtocol, sock=sock)
    else:
        async def handle(reader, writer):
            writer.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
        server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await done


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    name, port = argv[0], int(argv[1]) if len(argv) > 1 else 0
    if name == "selectors":
        selectors_server(port)
    elif name == "asyncio-streams":
        asyncio.run(_serve_asyncio(port, protocol=False))
    elif name == "asyncio-protocol":
        asyncio.run(_serve_asyncio(port, protocol=True))
    elif name == "uvloop-protocol":
        import uvloop
        uvloop.install()
        asyncio.run(_serve_asyncio(port, protocol=True))
    else:
        raise SystemExit(f"unknown contender {name!r}")


if __name__ == "__main__":
    main()
