"""A TCP client for the reset tests: connects (to ADDR PORT, or a Unix socket with PORT "unix"),
sends a request, then by MODE: `read` reads until end or error (and once more after); `half` shuts
its sending side first; `write` waits a second (the server has reset by then) and writes twice.
Prints what each call gave, so that a wrapped run and the kernel's own can be compared.

    rst_client.py ADDR PORT read|half|write
"""
import socket, sys, time
host, port, mode = sys.argv[1], sys.argv[2], sys.argv[3]
port = 0 if port == "unix" else int(port)
if sys.argv[2] == "unix":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(host)
else:
    s = socket.create_connection((host, port), timeout=20)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
def report(what, f):
    try:
        print(what, f())
    except OSError as e:
        print(what, type(e).__name__, e.errno)
if mode == "write":
    time.sleep(1)
    report("send", lambda: s.send(b"more"))
    report("send", lambda: s.send(b"more"))
    sys.exit(0)
if mode == "half":
    s.shutdown(socket.SHUT_WR)
n = 0
try:
    while True:
        b = s.recv(65536)
        if not b:
            print("EOF", n)
            break
        n += len(b)
except OSError as e:
    print(type(e).__name__, e.errno, n)
report("then", lambda: len(s.recv(10)))
