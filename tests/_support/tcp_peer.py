"""Kernel TCP endpoints for interop tests. Every mode prints one JSON line when done.

server ADDR PORT SEND        accept one connection; send SEND random bytes while reading to EOF;
                             print sha256 of what was sent and received
client ADDR PORT SEND        the same as a client
echo ADDR PORT               threaded echo server for many concurrent connections (runs forever)
rst ADDR PORT AFTER          accept one; send AFTER bytes then reset (SO_LINGER 0)
slowsink ADDR PORT           accept one; read nothing; print when it is done... (unused)
flood ADDR PORT SEND         accept one; send SEND bytes as fast as the window allows, reporting
                             progress lines {"sent": n} every 256 KiB; then close
halfclose ADDR PORT          accept one; shut down writing at once; read to EOF; reply with the
                             sha256 of what it read; close
"""
import hashlib
import json
import os
import socket
import sys
import threading


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def listen(addr, port):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(512)
    print(json.dumps({"listening": port}), flush=True)
    return s


def exchange(conn, send_size):
    sent_hash = hashlib.sha256()
    recv_hash = hashlib.sha256()
    received = [0]

    def reader():
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            recv_hash.update(data)
            received[0] += len(data)

    t = threading.Thread(target=reader)
    t.start()
    left = send_size
    while left > 0:
        chunk = os.urandom(min(left, 1 << 16))
        conn.sendall(chunk)
        sent_hash.update(chunk)
        left -= len(chunk)
    conn.shutdown(socket.SHUT_WR)
    t.join()
    conn.close()
    return {"sent": sent_hash.hexdigest(), "received": recv_hash.hexdigest(), "receivedBytes": received[0]}


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "server":
        s = listen(addr, port)
        conn, peer = s.accept()
        result = exchange(conn, int(sys.argv[4]))
        result["peer"] = peer[0]
        print(json.dumps(result), flush=True)
    elif mode == "client":
        conn = socket.create_connection((addr, port))
        print(json.dumps(exchange(conn, int(sys.argv[4]))), flush=True)
    elif mode == "echo":
        s = listen(addr, port)

        def serve(conn):
            with conn:
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        break
                    conn.sendall(data)

        while True:
            conn, _ = s.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    elif mode == "rst":
        s = listen(addr, port)
        conn, _ = s.accept()
        conn.sendall(os.urandom(int(sys.argv[4])))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()
        print(json.dumps({"reset": True}), flush=True)
    elif mode == "flood":
        s = listen(addr, port)
        conn, _ = s.accept()
        total = int(sys.argv[4])
        h = hashlib.sha256()
        sent = 0
        mark = 0
        while sent < total:
            chunk = os.urandom(min(total - sent, 1 << 14))
            conn.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
            if sent - mark >= 1 << 18:
                mark = sent
                print(json.dumps({"progress": sent}), flush=True)
        conn.close()
        print(json.dumps({"sent": h.hexdigest(), "bytes": sent}), flush=True)
    elif mode == "halfclose":
        s = listen(addr, port)
        conn, _ = s.accept()
        conn.shutdown(socket.SHUT_WR)
        h = hashlib.sha256()
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            h.update(data)
        conn.close()
        print(json.dumps({"received": h.hexdigest()}), flush=True)


main()
