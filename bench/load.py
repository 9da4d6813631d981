"""Workloads and servers for `deno task bench`. The same client runs in every mode (kernel TCP
through wireguard-go, wrapped by `wrapguard run`, or through `wrapguard forward`), so the only
thing that differs between rows is the tunnel. Every client prints one JSON line.

Servers (peer namespace, kernel TCP behind wireguard-go; run until killed):
  echo ADDR PORT                  asyncio echo server (many idle connections)
  hello ADDR PORT                 sends one byte to every connection, then closes it
  bulk ADDR PORT                  per connection, the first byte says: b"U" read to EOF then
                                  reply with the byte count (8 bytes), b"D" send until reset
  udpsink ADDR PORT               counts datagrams; exits 1 s after the last one; prints
                                  {"count", "bytes", "seconds"}
Clients:
  pingpong HOST PORT N            1-byte request/response N times on one connection: p50, p99
  connrate HOST PORT SECONDS      connect, 1 byte each way, close, as often as possible
  udpblast HOST PORT SIZE SECONDS send SIZE-byte datagrams as fast as possible
  hold HOST PORT N SECONDS        open N connections, print {"held": N}, keep them SECONDS
  firstbyte HOST PORT             connect (retrying while refused), read 1 byte; prints the
                                  wall clock (ms) when it arrived
"""
import asyncio
import json
import resource
import socket
import sys
import threading
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    except (ValueError, OSError):
        pass


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def listen(addr, port, kind=socket.SOCK_STREAM):
    s = socket.socket(family(addr), kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        s.listen(4096)
    print(json.dumps({"listening": port}), flush=True)
    return s


def serve_echo(addr, port):
    raise_nofile()

    async def handle(reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
        except ConnectionError:
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, addr, port, backlog=4096, reuse_address=True)
        print(json.dumps({"listening": port}), flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_hello(addr, port):
    s = listen(addr, port)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"!")
        except OSError:
            pass
        c.close()


def serve_bulk(addr, port):
    s = listen(addr, port)
    block = b"\xa5" * (1 << 17)

    def one(c):
        try:
            mode = c.recv(1)
            if mode == b"U":
                n = 0
                while True:
                    d = c.recv(1 << 18)
                    if not d:
                        break
                    n += len(d)
                c.sendall(n.to_bytes(8, "big"))
            elif mode == b"D":
                while True:
                    c.sendall(block)
        except OSError:
            pass
        c.close()

    while True:
        c, _ = s.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def serve_udpsink(addr, port):
    s = listen(addr, port, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    count = nbytes = 0
    first = last = None
    s.settimeout(30)
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        now = time.perf_counter()
        if first is None:
            first = now
            s.settimeout(1.0)
        last = now
        count += 1
        nbytes += len(d)
    seconds = (last - first) if first is not None else 0
    print(json.dumps({"count": count, "bytes": nbytes, "seconds": seconds}), flush=True)


def connect(host, port):
    c = socket.create_connection((host, port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def pingpong(host, port, n):
    c = connect(host, port)
    samples = []
    for i in range(n + n // 10):
        t = time.perf_counter()
        c.sendall(b"x")
        if not c.recv(1):
            raise SystemExit("closed")
        if i >= n // 10:  # the first tenth warms up
            samples.append((time.perf_counter() - t) * 1000)
    c.close()
    samples.sort()
    print(json.dumps({
        "p50": samples[len(samples) // 2],
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "n": len(samples),
    }))


def connrate(host, port, seconds):
    end = time.perf_counter() + seconds
    n = 0
    start = time.perf_counter()
    while time.perf_counter() < end:
        c = connect(host, port)
        c.sendall(b"x")
        if not c.recv(1):
            raise SystemExit("closed")
        c.close()
        n += 1
    print(json.dumps({"perSecond": n / (time.perf_counter() - start), "n": n}))


def udpblast(host, port, size, seconds):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.connect((host, port))
    data = b"\x5a" * size
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(64):
            try:
                s.send(data)
                n += 1
            except (BlockingIOError, ENOBUFS_ERRORS):
                pass
        if time.perf_counter() >= end:
            break
    print(json.dumps({"sent": n, "seconds": time.perf_counter() - start}))


ENOBUFS_ERRORS = OSError


def hold(host, port, n, seconds):
    raise_nofile()
    conns = []
    for _ in range(n):
        c = connect(host, port)
        c.sendall(b"x")
        c.recv(1)
        conns.append(c)
    print(json.dumps({"held": len(conns)}), flush=True)
    time.sleep(seconds)


def firstbyte(host, port):
    deadline = time.time() + 30
    while True:
        try:
            c = socket.create_connection((host, port))
            if c.recv(1):
                break
            c.close()
        except OSError:
            if time.time() > deadline:
                raise
        time.sleep(0.002)
    print(json.dumps({"at": time.time() * 1000}))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode in ("echo", "hello", "bulk", "udpsink"):
        {"echo": serve_echo, "hello": serve_hello, "bulk": serve_bulk, "udpsink": serve_udpsink}[
            mode](args[0], int(args[1]))
    elif mode == "pingpong":
        pingpong(args[0], int(args[1]), int(args[2]))
    elif mode == "connrate":
        connrate(args[0], int(args[1]), float(args[2]))
    elif mode == "udpblast":
        udpblast(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "hold":
        hold(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "firstbyte":
        firstbyte(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
