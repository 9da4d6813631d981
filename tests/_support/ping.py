#!/usr/bin/env python3
"""ICMP echo over raw sockets (needs root), for machines without iputils ping.

usage: ping.py DEST COUNT TIMEOUT_SECONDS INTERVAL_SECONDS

Prints one line per reply and a summary line in ping's wording,
"N packets transmitted, M received"; exits 0 when every echo was answered, 1 otherwise.
"""
import os
import select
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main() -> int:
    dest, count, timeout, interval = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
    )
    v6 = ":" in dest
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        req, rep = 128, 129  # the kernel fills in the ICMPv6 checksum
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        req, rep = 8, 0
    ident = os.getpid() & 0xFFFF
    received = 0
    for seq in range(1, count + 1):
        if seq > 1:
            time.sleep(interval)
        payload = b"wrapguard-harness-ping".ljust(56, b".")
        head = struct.pack("!BBHHH", req, 0, 0, ident, seq)
        if not v6:
            head = struct.pack("!BBHHH", req, 0, checksum(head + payload), ident, seq)
        sent = time.monotonic()
        try:
            sock.sendto(head + payload, (dest, 0))
        except OSError as e:
            print(f"sendto {dest}: {e.strerror}", flush=True)
            continue
        deadline = sent + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, addr = sock.recvfrom(65535)
            if not v6:
                data = data[(data[0] & 0x0F) * 4 :]
            if len(data) < 8:
                continue
            typ, _code, _sum, rid, rseq = struct.unpack("!BBHHH", data[:8])
            if typ == rep and rid == ident and rseq == seq:
                ms = (time.monotonic() - sent) * 1000
                print(f"{len(data)} bytes from {addr[0]}: icmp_seq={seq} time={ms:.3f} ms", flush=True)
                received += 1
                break
    print(f"{count} packets transmitted, {received} received")
    return 0 if received == count else 1


if __name__ == "__main__":
    sys.exit(main())
