#!/usr/bin/python3
"""Traffic and DogStatsD receivers for the package and container tests (scripts/*-test.sh).

  testnet.py echo-server ADDR PORT            TCP echo server (runs until killed)
  testnet.py client ADDR PORT SECONDS         one connection, 200-byte request/echo every 20 ms
  testnet.py dsd-udp ADDR PORT OUT            DogStatsD receiver on UDP: one line per metric in OUT
  testnet.py dsd-unix PATH OUT                the same on a Unix datagram socket (made mode 0666)

The receivers append every datagram's lines to OUT as they arrive (flushed), so a test can
wait for a metric with grep. Standard library only: it runs on the CI machine's python3.
"""

import os
import socket
import socketserver
import sys
import time


def echo_server(addr, port):
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    socketserver.ThreadingTCPServer.address_family = family
    with socketserver.ThreadingTCPServer((addr, int(port)), Echo) as srv:
        srv.serve_forever()


def client(addr, port, seconds):
    deadline = time.monotonic() + float(seconds)
    with socket.create_connection((addr, int(port)), timeout=5) as s:
        payload = b"m" * 200
        while time.monotonic() < deadline:
            s.sendall(payload)
            got = 0
            while got < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit("client: the server closed the connection")
                got += len(chunk)
            time.sleep(0.02)


def receive(sock, out):
    with open(out, "a", buffering=1) as f:
        while True:
            data = sock.recv(65536)
            for line in data.decode("utf-8", "replace").splitlines():
                if line:
                    f.write(line + "\n")


def dsd_udp(addr, port, out):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    receive(s, out)


def dsd_unix(path, out):
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    # metro runs as another (unprivileged) user: it must be able to send here.
    os.chmod(path, 0o666)
    receive(s, out)


def main():
    cmds = {"echo-server": echo_server, "client": client, "dsd-udp": dsd_udp, "dsd-unix": dsd_unix}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except TypeError:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
