#!/usr/bin/env python3
"""Attacks on the example server's HTTP layer (issue 19), over loopback.

    http_hardening_test.py SERVER_BINARY CLI_BINARY [CASE...]

Each case starts its own server (free ports, fresh SQLite file) and checks:
  trailer_crash   a chunked request with a 70,000-byte trailer field (Beast
                  1.74 throws std::length_error on it), on the plain and the
                  TLS port: the server stays up and answers /healthz
  trailer_memory  four unfinished connections streaming 60 KB trailer fields:
                  the server's RSS stays under 64 MB
  trailer_auth    trailers are refused (400, connection closed): an
                  Authorization field sent as a trailer (over TLS) never
                  authenticates
  transfer_coding a Transfer-Encoding whose final coding is not chunked
                  (with or without Content-Length), or any in HTTP/1.0: 400,
                  then the connection is closed (no second request is read)
  limits          a header over 8 KiB: 431; a body over 64 KiB (chunked
                  too): 413; the connection closed after the answer
  connection_cap  --max-connections N: at most N connections are held, the
                  rest are closed at once; afterwards /healthz is answered
  emfile          under a 128-descriptor limit, 200 idle connections: the
                  server does not spin (CPU time, and time running or waiting
                  to run, < 50% of a 3 s window) and answers
                  /healthz once they are gone
Every socket has a timeout; the whole test takes about 20 s.
Exit: 0 pass, 1 fail.
"""

import glob
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

SERVER = sys.argv[1]
CLI = sys.argv[2]
CASES = sys.argv[3:]

failures = 0


def ok(name):
    print(f"ok    {name}", flush=True)


def fail(name):
    global failures
    failures += 1
    print(f"FAIL  {name}", flush=True)


def check(cond, name):
    if cond:
        ok(name)
    else:
        fail(name)


class Server:
    """The example server on free loopback ports (HTTPS and plain HTTP)."""

    def __init__(self, work, extra=(), nofile=None):
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.ports_file = os.path.join(work, "ports")
        self.cert = os.path.join(work, "cert.pem")
        self.err_path = os.path.join(work, "server.err")
        self.log_path = os.path.join(work, "access.log")
        env = {k: v for k, v in os.environ.items() if k not in ("KEYGATE_DB", "KEYGATE_PEPPER_FILE")}

        def limit():
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [SERVER, "--db", os.path.join(work, "keygate.db"), "--port", "0", "--http-port", "0",
             "--port-file", self.ports_file, "--write-cert", self.cert,
             "--access-log", self.log_path, *extra],
            stdout=subprocess.DEVNULL, stderr=self.err, env=env, preexec_fn=limit)
        deadline = time.monotonic() + 60  # a hang guard: sanitized builds start slowly
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(self.ports_file):
                break
            time.sleep(0.05)
        if not os.path.exists(self.ports_file):
            raise RuntimeError("server did not start: " + self.stderr())
        ports = dict(line.split("=") for line in open(self.ports_file).read().split())
        self.https = int(ports["https"])
        self.http = int(ports["http"])

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        self.err.flush()
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1))

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after ')'.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def busy_seconds(self):
        """Time its threads ran or waited to run (schedstat: on the CPU, then
        on a run queue): unlike CPU time, a spinning process reaches the wall
        time even on a machine busy with other work."""
        total = 0
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/schedstat") as f:
                    run, wait = f.read().split()[:2]
                total += int(run) + int(wait)
            except (OSError, ValueError):
                pass
        return total / 1e9

    def connect(self, tls=False, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.https if tls else self.http),
                                     timeout=timeout)
        if tls:
            ctx = ssl.create_default_context(cafile=self.cert)
            s = ctx.wrap_socket(s, server_hostname="localhost")
        return s

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def send_all(s, data):
    """Sends what the peer takes; False once it closed or reset."""
    try:
        s.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
        return False


def read_all(s, limit=1 << 20):
    """Everything until the peer closes (or the socket times out)."""
    out = b""
    try:
        while len(out) < limit:
            chunk = s.recv(65536)
            if not chunk:
                return out, True
            out += chunk
    except socket.timeout:
        return out, False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return out, True
    return out, False


def healthz(server, tls=False):
    """The status of GET /healthz on a new connection, or None."""
    try:
        with server.connect(tls) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data, _ = read_all(s)
    except OSError:
        return None
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    return int(m.group(1)) if m else None


def statuses(data):
    return [int(x) for x in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


def case_trailer_crash(work):
    server = Server(work)
    try:
        for tls in (False, True):
            port = "TLS" if tls else "plain"
            try:
                with server.connect(tls) as s:
                    send_all(s, b"POST /healthz HTTP/1.1\r\nHost: localhost\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
                             b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")
                    read_all(s)
            except OSError:
                pass
            time.sleep(0.2)
            check(server.alive(), f"trailer_crash ({port}): a 70,000-byte trailer field: "
                  "the server is still running")
            if not server.alive():
                return
            check(healthz(server, tls) == 200, f"trailer_crash ({port}): /healthz answered after it")
    finally:
        server.stop()


def case_trailer_memory(work):
    server = Server(work)
    try:
        base = server.rss_kb()
        conns = []
        for _ in range(4):
            s = server.connect()
            send_all(s, b"POST /healthz HTTP/1.1\r\nHost: localhost\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n")
            conns.append(s)
        field = b"X-T: " + b"b" * 60000 + b"\r\n"
        # 24 MB per connection, never ending the trailer section.
        for _ in range(400):
            for s in conns:
                if s is not None and not send_all(s, field):
                    conns[conns.index(s)] = None
        time.sleep(0.3)
        rss = server.rss_kb()
        for s in conns:
            if s is not None:
                s.close()
        check(server.alive() and rss - base < 48 * 1024,
              f"trailer_memory: RSS {rss // 1024} MB (from {base // 1024} MB) with 4 connections "
              "streaming 60 KB trailer fields (bound: 48 MB of growth)")
        check(healthz(server) == 200, "trailer_memory: /healthz answered after it")
    finally:
        server.stop()


def make_key(work):
    out = subprocess.run(
        [CLI, "--db", os.path.join(work, "keygate.db"), "--json", "create", "--name", "reader",
         "--owner", "alice", "--env", "production", "--scope", "read:all"],
        capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if k not in ("KEYGATE_DB", "KEYGATE_PEPPER_FILE")})
    return re.search(r'"token":"([^"]*)"', out.stdout).group(1)


def case_trailer_auth(work):
    os.makedirs(work, exist_ok=True)
    token = make_key(work).encode()
    server = Server(work)
    try:
        with server.connect(tls=True) as s:
            s.sendall(b"GET /v1/projects HTTP/1.1\r\nHost: localhost\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\nAuthorization: Bearer " + token +
                      b"\r\n\r\n")
            data, closed = read_all(s)
        check(statuses(data) == [400] and closed,
              f"trailer_auth: Authorization as a trailer: {statuses(data)}, closed {closed} "
              "(want [400], closed)")
        with server.connect(tls=True) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Checksum: 1\r\n\r\n"
                      b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data, closed = read_all(s)
        check(statuses(data) == [400] and closed,
              f"trailer_auth: any trailer field: {statuses(data)}, closed {closed} "
              "(want [400], closed)")
        # Without trailers a chunked request is fine, and the bearer header works.
        with server.connect(tls=True) as s:
            s.sendall(b"GET /v1/projects HTTP/1.1\r\nHost: localhost\r\n"
                      b"Authorization: Bearer " + token + b"\r\n"
                      b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")
            data, closed = read_all(s)
        check(statuses(data) == [200],
              f"trailer_auth: chunked without trailers: {statuses(data)} (want [200])")
    finally:
        server.stop()


def case_transfer_coding(work):
    server = Server(work)
    second = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    cases = [
        ("gzip with Content-Length", b"POST /healthz HTTP/1.1\r\nHost: localhost\r\n"
         b"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello" + second),
        ("gzip without Content-Length", b"POST /healthz HTTP/1.1\r\nHost: localhost\r\n"
         b"Transfer-Encoding: gzip\r\n\r\n" + second),
        ("chunked not final", b"POST /healthz HTTP/1.1\r\nHost: localhost\r\n"
         b"Transfer-Encoding: chunked, gzip\r\nContent-Length: 5\r\n\r\nhello" + second),
        ("chunked then a second field", b"POST /healthz HTTP/1.1\r\nHost: localhost\r\n"
         b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + second),
        ("chunked twice", b"POST /healthz HTTP/1.1\r\nHost: localhost\r\n"
         b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" + second),
        ("HTTP/1.0 with chunked", b"POST /healthz HTTP/1.0\r\nHost: localhost\r\n"
         b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + second),
    ]
    try:
        for name, request in cases:
            with server.connect() as s:
                s.sendall(request)
                data, closed = read_all(s)
            closing = b"\r\nConnection: close\r\n" in data
            check(statuses(data) == [400] and closed and closing,
                  f"transfer_coding: {name}: {statuses(data)}, Connection: close {closing}, "
                  f"closed {closed} (want [400], True, True)")
        # A final chunked coding is framed and answered as usual.
        with server.connect() as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                      b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + second[:-2] +
                      b"Connection: close\r\n\r\n")
            data, _ = read_all(s)
        check(statuses(data) == [200, 200],
              f"transfer_coding: gzip, chunked: {statuses(data)} (want [200, 200])")
    finally:
        server.stop()


def socket_count(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def case_limits(work):
    server = Server(work)
    cases = [
        ("a 9 KiB header", 431, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " +
         b"p" * 9216 + b"\r\n\r\n"),
        ("a 70,000-byte body", 413, b"POST /v1/projects HTTP/1.1\r\nHost: localhost\r\n"
         b"Content-Length: 70000\r\n\r\n"),
        ("70,000 bytes in chunks", 413, b"POST /v1/projects HTTP/1.1\r\nHost: localhost\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n8000\r\n" + b"c" * 0x8000 + b"\r\n8000\r\n" +
         b"c" * 0x8000 + b"\r\n1000\r\n"),
    ]
    try:
        for name, want, request in cases:
            with server.connect() as s:
                send_all(s, request)
                data, closed = read_all(s)
            check(statuses(data) == [want] and closed,
                  f"limits: {name}: {statuses(data)}, closed {closed} (want [{want}], closed)")
    finally:
        server.stop()


def case_connection_cap(work):
    server = Server(work, extra=["--max-connections", "8"])
    try:
        before = socket_count(server.proc.pid)
        conns = [server.connect() for _ in range(20)]
        # Wait (a hang guard, not a limit) until the server has closed the 12
        # over the cap, then see that it holds no more than 8.
        open_conns = list(conns)
        closed = 0
        deadline = time.monotonic() + 30
        while open_conns and closed < 12 and time.monotonic() < deadline:
            still = []
            for s in open_conns:
                s.settimeout(0.05)
                try:
                    if s.recv(1) == b"":
                        closed += 1
                    else:
                        still.append(s)
                except socket.timeout:
                    still.append(s)
                except OSError:
                    closed += 1
            open_conns = still
        time.sleep(0.3)  # the last close settles before the count
        held = socket_count(server.proc.pid) - before
        check(held <= 8 and closed == 12,
              f"connection_cap: 20 idle connections, cap 8: {held} held, {closed} closed "
              "(want <= 8 held, 12 closed)")
        for s in conns:
            s.close()
        time.sleep(0.3)
        check(healthz(server) == 200 and healthz(server, tls=True) == 200,
              "connection_cap: /healthz answered once they are gone")
    finally:
        server.stop()


def case_emfile(work):
    server = Server(work, nofile=128)  # the default cap (512) is not what stops it
    conns = []
    try:
        for _ in range(200):
            try:
                conns.append(socket.create_connection(("127.0.0.1", server.http), timeout=2))
            except OSError:
                break
        time.sleep(0.5)  # the server has run out of descriptors by now
        cpu0, busy0, t0 = server.cpu_seconds(), server.busy_seconds(), time.monotonic()
        time.sleep(3)
        cpu = server.cpu_seconds() - cpu0
        busy = server.busy_seconds() - busy0
        wall = time.monotonic() - t0
        check(cpu < 0.5 * wall and busy < 0.5 * wall,
              f"emfile: {len(conns)} idle connections under 128 descriptors: "
              f"{cpu:.2f} s CPU, {busy:.2f} s running or runnable, in {wall:.2f} s "
              "(bound: half)")
        for s in conns:
            s.close()
        conns = []
        status = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and status != 200:
            status = healthz(server)
            if status != 200:
                time.sleep(0.1)
        check(server.alive() and status == 200,
              f"emfile: /healthz answered once they are gone (got {status}, "
              f"running {server.alive()})")
        check("out of file descriptors" in server.stderr(),
              "emfile: the server says it ran out of descriptors")
    finally:
        for s in conns:
            s.close()
        server.stop()


def main():
    all_cases = {
        "trailer_crash": case_trailer_crash,
        "trailer_memory": case_trailer_memory,
        "trailer_auth": case_trailer_auth,
        "transfer_coding": case_transfer_coding,
        "limits": case_limits,
        "connection_cap": case_connection_cap,
        "emfile": case_emfile,
    }
    root = tempfile.mkdtemp(prefix="keygate_hardening.")
    try:
        for name in CASES or all_cases:
            print(f"== {name}", flush=True)
            failed_before = failures
            try:
                all_cases[name](os.path.join(root, name))
            except Exception as e:  # a case that cannot run is a failure
                fail(f"{name}: {type(e).__name__}: {e}")
            if failures > failed_before:
                for err in glob.glob(os.path.join(root, name, "server.err")):
                    print("      server stderr:\n" + open(err, errors="replace").read()[-3000:])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if failures:
        print(f"{failures} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
