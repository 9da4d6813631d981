"""UDP echo for interop tests, on the kernel's UDP.

server ADDR PORT            echo every datagram back to its sender until killed
client ADDR PORT N MAXSIZE  send N datagrams of sizes 1..MAXSIZE (cycling), each with a distinct
                            pattern, wait for each echo and compare; print 'ok N' or the mismatch
"""
import socket
import sys


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def server(addr, port):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    print("listening", flush=True)
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)


def client(addr, port, n, maxsize):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((addr, port))
    for i in range(n):
        size = 1 + (i * 7919) % maxsize if i < n - 1 else maxsize
        payload = bytes(((i + j) * 31) & 0xFF for j in range(size))
        for attempt in range(3):
            s.send(payload)
            try:
                got = s.recv(65535)
                break
            except socket.timeout:
                continue
        else:
            print("timeout at", i, size, flush=True)
            sys.exit(1)
        if got != payload:
            print("mismatch at", i, size, len(got), flush=True)
            sys.exit(1)
    print("ok", n, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
