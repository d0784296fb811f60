"""Configuration sources and validation, observed from outside the process:
defaults < file < environment < flags, refusals at start-up (exit 2, message
naming the key), and the command line itself."""
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import CHORUS_BIN, free_port, sanitizer_report
from rawws import http_request, ws_handshake_request, http_exchange


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env.update(extra)
    return env


class Proc:
    """A chorus started with exactly the given arguments and environment."""

    def __init__(self, args, env, tmp_path):
        self.log = open(tmp_path / f"chorus-{time.monotonic_ns()}.log", "w+b")
        self.p = subprocess.Popen([CHORUS_BIN] + args, env=env, cwd=tmp_path,
                                  stdout=self.log, stderr=subprocess.STDOUT)

    def wait_listening(self, port, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.p.poll() is None, "chorus exited: " + self.output()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"nothing listening on {port}:\n" + self.output())

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


@pytest.fixture
def launch(tmp_path):
    procs = []

    def start(args, env=None):
        p = Proc(args, clean_env(**(env or {})), tmp_path)
        procs.append(p)
        return p

    yield start
    problems = []
    for p in procs:
        rc = p.stop()
        out = p.output()
        p.log.close()
        if rc != 0 or sanitizer_report(out):
            problems.append(f"chorus exited with {rc}:\n{out}")
    assert not problems, "\n".join(problems)


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def serve_args(tmp_path, *extra):
    return ["serve", "--data-dir", str(tmp_path / "data"), "--threads", "1"] + list(extra)


# ---------------------------------------------------------------------------
# Precedence


def test_listen_from_env(launch, tmp_path):
    port = free_port()
    p = launch(serve_args(tmp_path), env={"CHORUS_LISTEN": f"127.0.0.1:{port}"})
    p.wait_listening(port)
    assert http_request(port, "GET", "/health").status == 200


def test_flag_beats_env(launch, tmp_path):
    env_port, flag_port = free_port(), free_port()
    p = launch(serve_args(tmp_path, "--listen", f"127.0.0.1:{flag_port}"),
               env={"CHORUS_LISTEN": f"127.0.0.1:{env_port}"})
    p.wait_listening(flag_port)
    assert http_request(flag_port, "GET", "/health").status == 200
    assert refused(env_port)


def test_flag_equals_form(launch, tmp_path):
    port = free_port()
    p = launch(serve_args(tmp_path, f"--listen=127.0.0.1:{port}"))
    p.wait_listening(port)


def test_file_then_env(launch, tmp_path):
    file_port, env_port = free_port(), free_port()
    conf = tmp_path / "chorus.conf"
    conf.write_text(f"# test config\nlisten = 127.0.0.1:{file_port}   # trailing comment\n\n")
    p = launch(serve_args(tmp_path, "--config", str(conf)), env={"CHORUS_LISTEN": f"127.0.0.1:{env_port}"})
    p.wait_listening(env_port)
    assert refused(file_port)


def test_file_alone_via_chorus_config(launch, tmp_path):
    file_port = free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"listen = 127.0.0.1:{file_port}\ntest-endpoints = yes\n")
    p = launch(serve_args(tmp_path), env={"CHORUS_CONFIG": str(conf)})
    p.wait_listening(file_port)
    assert http_request(file_port, "GET", "/echo?count=1&interval_ms=1").status == 200


def test_limits_precedence_observable(launch, tmp_path):
    # file says 1 KiB, env says 2 KiB, flag says 4 KiB: body sizes tell who won.
    port = free_port()
    conf = tmp_path / "limits.conf"
    conf.write_text("max-body = 1KiB\ntest-endpoints = true\n")
    body = b"x" * 3000
    p = launch(serve_args(tmp_path, "--config", str(conf), "--listen", f"127.0.0.1:{port}"),
               env={"CHORUS_MAX_BODY": "2KiB"})
    p.wait_listening(port)
    assert http_request(port, "POST", "/bench/pub?channel=c", body=body).status == 413
    assert http_request(port, "POST", "/bench/pub?channel=c", body=b"y" * 1500).status == 202
    assert p.stop() == 0

    port = free_port()
    p = launch(serve_args(tmp_path, "--config", str(conf), "--listen", f"127.0.0.1:{port}",
                          "--max-body", "4KiB"), env={"CHORUS_MAX_BODY": "1KiB"})
    p.wait_listening(port)
    assert http_request(port, "POST", "/bench/pub?channel=c", body=body).status == 202


def test_boolean_env_and_negated_flag(launch, tmp_path):
    port = free_port()
    p = launch(serve_args(tmp_path, "--listen", f"127.0.0.1:{port}", "--no-test-endpoints"),
               env={"CHORUS_TEST_ENDPOINTS": "true"})
    p.wait_listening(port)
    assert http_request(port, "GET", "/echo?count=1").status == 404


def test_origins_list_env_and_flag(launch, tmp_path):
    port = free_port()
    p = launch(serve_args(tmp_path, "--listen", f"127.0.0.1:{port}", "--test-endpoints"),
               env={"CHORUS_ORIGINS": "https://a.example, https://b.example"})
    p.wait_listening(port)

    def status(origin):
        raw, _ = ws_handshake_request(port, "/echo", extra={"Origin": origin})
        return http_exchange(port, raw, head_only=True)[0].status

    assert status("https://a.example") == 101
    assert status("https://b.example") == 101
    assert status("https://c.example") == 403
    assert p.stop() == 0

    # A flag replaces the environment's list rather than appending to it.
    port = free_port()
    p = launch(serve_args(tmp_path, "--listen", f"127.0.0.1:{port}", "--test-endpoints",
                          "--origins", "https://c.example"),
               env={"CHORUS_ORIGINS": "https://a.example,https://b.example"})
    p.wait_listening(port)
    assert status("https://c.example") == 101
    assert status("https://a.example") == 403


def test_unrelated_chorus_env_ignored(launch, tmp_path):
    port = free_port()
    p = launch(serve_args(tmp_path, "--listen", f"127.0.0.1:{port}"),
               env={"CHORUS_NOT_A_KEY": "whatever", "CHORUS_BIN": "/x"})
    p.wait_listening(port)


# ---------------------------------------------------------------------------
# Refusals: exit 2 and a message naming the key


def run_cli(args, env=None, tmp_path=None, timeout=10):
    cwd = str(tmp_path) if tmp_path else None
    try:
        r = subprocess.run([CHORUS_BIN] + args, env=clean_env(**(env or {})), cwd=cwd,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"chorus {args} did not exit (it should refuse its configuration)")
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert not sanitizer_report(out + err), err
    return r.returncode, out, err


@pytest.mark.parametrize("flags,key", [
    (["--threads", "abc"], "threads"),
    (["--threads", "9999"], "threads"),
    (["--max-frame", "12XB"], "max-frame"),
    (["--max-message", "-5"], "max-message"),
    (["--ping-interval", "banana"], "ping-interval"),
    (["--header-timeout", "10 parsecs"], "header-timeout"),
    (["--listen", "nonsense"], "listen"),
    (["--listen", "127.0.0.1:70000"], "listen"),
    (["--log-level", "loud"], "log-level"),
    (["--deflate-level", "11"], "deflate-level"),
    (["--deflate=maybe"], "deflate"),
    (["--ping-interval", "10s", "--pong-timeout", "5s"], "pong-timeout"),
])
def test_bad_flag_values_exit_2(tmp_path, flags, key):
    port = free_port()
    rc, out, err = run_cli(["serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")]
                           + flags, tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert key in err, err
    assert refused(port)


@pytest.mark.parametrize("var,value,key", [
    ("CHORUS_THREADS", "-3", "threads"),
    ("CHORUS_MAX_OUTBOUND", "lots", "max-outbound"),
    ("CHORUS_SHUTDOWN_TIMEOUT", "soon", "shutdown-timeout"),
])
def test_bad_env_values_exit_2(tmp_path, var, value, key):
    rc, out, err = run_cli(["serve", "--listen", f"127.0.0.1:{free_port()}"], env={var: value},
                           tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert key in err and var in err, err


def test_bad_file_value_names_key_and_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("# comment\nlisten = 127.0.0.1:%d\nthreads = abc\n" % free_port())
    rc, out, err = run_cli(["serve", "--config", str(conf)], tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert "threads" in err and "abc" in err and ":3" in err, err


def test_unknown_key_in_file_suggests(tmp_path):
    conf = tmp_path / "typo.conf"
    conf.write_text("max-fram = 1KiB\n")
    rc, out, err = run_cli(["serve", "--config", str(conf), "--listen", f"127.0.0.1:{free_port()}"],
                           tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert "max-fram" in err and "max-frame" in err, err


def test_missing_config_file(tmp_path):
    rc, out, err = run_cli(["serve", "--config", str(tmp_path / "absent.conf")], tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert "absent.conf" in err, err


def test_all_errors_reported_at_once(tmp_path):
    rc, out, err = run_cli(["serve", "--threads", "abc", "--max-frame", "huge", "--log-level", "x"],
                           tmp_path=tmp_path)
    assert rc == 2
    for key in ("threads", "max-frame", "log-level"):
        assert key in err, err


def test_tls_cert_without_key_exit_2(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("not really")
    rc, out, err = run_cli(["serve", "--tls-cert", str(cert), "--listen", f"127.0.0.1:{free_port()}"],
                           tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert "tls-key" in err, err


# ---------------------------------------------------------------------------
# Command line


def test_serve_help_exits_0():
    rc, out, err = run_cli(["serve", "--help"])
    assert rc == 0, err
    for flag in ("--listen", "--max-frame", "--max-message", "--max-outbound", "--header-timeout",
                 "--ping-interval", "--pong-timeout", "--origins", "--deflate", "--tls-cert",
                 "--shutdown-timeout", "--sse-heartbeat", "--threads", "test-endpoints"):
        assert flag in out, flag


def test_help_and_version_exit_0():
    rc, out, _ = run_cli(["help"])
    assert rc == 0 and "serve" in out
    rc, out, _ = run_cli(["--help"])
    assert rc == 0 and "serve" in out
    rc, out, _ = run_cli(["version"])
    assert rc == 0 and out.startswith("chorus ")


def test_unknown_command_exits_2():
    rc, out, err = run_cli(["frobnicate"])
    assert rc == 2
    assert "frobnicate" in err


def test_unknown_flag_exits_2_with_suggestion(tmp_path):
    rc, out, err = run_cli(["serve", "--thred", "2"], tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert "--thred" in err and "--threads" in err, err


def test_unexpected_positional_exits_2(tmp_path):
    rc, out, err = run_cli(["serve", "extra-arg"], tmp_path=tmp_path)
    assert rc == 2, (rc, out, err)
    assert "extra-arg" in err
