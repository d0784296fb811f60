"""Black-box test support: start a real chorus hub on a free loopback port.

Every test that needs a server takes the `hub` fixture (a fresh hub per test,
with --test-endpoints and its own temporary data directory) or builds one with
`Hub(...)` for special flags. The hub's stderr goes to a file that is printed
only when a test fails, so passing runs stay quiet.
"""
import asyncio
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHORUS_BIN = os.environ.get("CHORUS_BIN") or str(ROOT / "build" / "chorus")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """One chorus process. Use as a context manager or call start()/stop()."""

    def __init__(self, *args, threads=2, test_endpoints=True, env=None, tls=None, data_dir=None):
        self.args = list(args)
        self.threads = threads
        self.test_endpoints = test_endpoints
        self.env = dict(os.environ, **(env or {}))
        self.tls = tls  # (cert, key) or None
        self._tmp = tempfile.TemporaryDirectory(prefix="chorus-test-")
        self.data_dir = data_dir or os.path.join(self._tmp.name, "data")
        self.log_path = os.path.join(self._tmp.name, "hub.log")
        self.port = None
        self.proc = None

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    def url(self, path="/", ws=False):
        scheme = ("wss" if self.tls else "ws") if ws else self.scheme
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def ws_url(self, path):
        return self.url(path, ws=True)

    def start(self, timeout=10.0):
        for attempt in range(5):
            self.port = free_port()
            cmd = [CHORUS_BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
                   "--data-dir", self.data_dir, "--threads", str(self.threads),
                   "--log-level", "debug" if os.environ.get("CHORUS_TEST_DEBUG") else "info"]
            if self.test_endpoints:
                cmd.append("--test-endpoints")
            if self.tls:
                cmd += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
            cmd += self.args
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError("chorus did not start:\n" + self.logs())

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stop the hub; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def logs(self):
        try:
            return pathlib.Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def get(self, path, headers=None):
        """HTTP GET; returns (status, headers, body bytes) without raising on 4xx/5xx."""
        req = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10, context=_insecure_ctx()) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def token(self, scopes="admin", user="e2e-admin", device="e2e"):
        """A JWT signed with this hub's secret (`chorus token` on its data directory)."""
        key = (scopes, user, device)
        cache = self.__dict__.setdefault("_tokens", {})
        if key not in cache:
            r = subprocess.run([CHORUS_BIN, "token", "--user", user, "--device", device,
                                "--scopes", scopes, "--ttl", "1h", "--data-dir", self.data_dir],
                               capture_output=True, text=True, timeout=10)
            assert r.returncode == 0, r.stderr
            cache[key] = r.stdout.strip().splitlines()[-1]
        return cache[key]

    def metrics(self):
        """/metrics (with an admin token) as {sample name (with labels): float};
        asserts the exposition parses."""
        status, headers, body = self.get("/metrics", {"Authorization": "Bearer " + self.token()})
        assert status == 200, (status, body)
        return parse_metrics(body.decode())

    def metric(self, name):
        return self.metrics()[name]

    def close(self):
        self.stop()
        self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')


def parse_metrics(text):
    """Parse Prometheus text format 0.0.4 strictly enough to catch a malformed line."""
    out = {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text.splitlines():
        if not line or line.startswith("#"):
            if line.startswith("# TYPE "):
                assert line.split()[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
            continue
        m = _SAMPLE.match(line)
        assert m, f"malformed metrics line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _insecure_ctx():
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def hub(request):
    h = Hub()
    try:
        yield h.start()
    finally:
        _report(request, [h])


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer")


def sanitizer_report(text):
    """The first sanitizer report line in a process's output, or None."""
    for line in text.splitlines():
        if any(m in line for m in SANITIZER_MARKS):
            return line
    return None


def _report(request, hubs):
    failed = getattr(request.node, "rep_call", None)
    failed = failed is not None and failed.failed
    problems = []
    for h in hubs:
        rc = h.stop()
        if failed:
            print(f"---- chorus log (port {h.port}) ----\n" + h.logs())
        if rc not in (0, None) and not getattr(h, "expect_nonzero_exit", False):
            problems.append("chorus did not exit cleanly (rc=%s):\n%s" % (rc, h.logs()))
        elif sanitizer_report(h.logs()):
            problems.append("sanitizer report:\n" + h.logs())
        h.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def make_hub(request):
    """Factory: make_hub("--max-frame", "1KiB", threads=1) starts a hub with extra flags;
    every hub is stopped at teardown and must exit 0."""
    hubs = []

    def make(*args, **kw):
        h = Hub(*args, **kw)
        hubs.append(h)
        return h.start()

    yield make
    _report(request, hubs)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for localhost/127.0.0.1, made at run time: (cert, key)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(cert), str(key)


def run(coro, timeout=60):
    """Run an asyncio coroutine to completion with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
