"""Raw-socket WebSocket and HTTP helpers for the black-box suite.

Real clients (python websockets) refuse to send broken frames, so protocol
tests talk to the hub through these instead:

    ws = RawWS.connect(port, "/echo")          # handshake, asserts 101
    ws.send_frame(OP_TEXT, b"hi", fin=False)   # masked by default
    ws.send_frame(OP_CONT, b"!", mask=False)   # ...or not, to provoke 1002
    f = ws.recv_frame()                        # Frame(fin, rsv, opcode, payload)
    code, reason = ws.expect_close()           # code from the server's close frame

http_exchange() sends raw request bytes and parses every response that comes
back (Content-Length, chunked or until close), for keep-alive, pipelining and
malformed-request tests.
"""
import base64
import collections
import hashlib
import os
import socket
import ssl
import struct
import time

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Frame = collections.namedtuple("Frame", "fin rsv opcode payload")


class Closed(Exception):
    """The server closed the TCP connection (EOF or reset)."""


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def mask_bytes(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, key=None, length=None):
    """One frame's bytes. rsv is the 3-bit RSV field (4 = RSV1). length overrides the
    encoded payload length (to lie about it)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = key if key is not None else os.urandom(4)
        return head + key + mask_bytes(payload, key)
    return head + payload


class Response:
    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), names lower-cased
        self.body = body
        self.version = version

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k == name.lower()]

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class Reader:
    """Buffered reader over a socket with a deadline per call."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = bytearray(buf)
        self.eof = False

    def _fill(self, deadline):
        if self.eof:
            raise Closed("connection closed by server")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out waiting for the server")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for the server") from None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as e:
            self.eof = True
            raise Closed(f"connection reset: {e}") from None
        if not data:
            self.eof = True
            raise Closed("connection closed by server")
        self.buf += data

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, sep, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("separator not found within limit")
            self._fill(deadline)

    def read_to_eof(self, deadline):
        try:
            while True:
                self._fill(deadline)
        except Closed:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def at_eof(self, timeout):
        """True if the peer closes (EOF/reset) within timeout with no more data."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                if self.buf:
                    return False
        except Closed:
            return not self.buf
        except TimeoutError:
            return False


def read_response(reader, deadline, head_only=False):
    head = reader.read_until(b"\r\n\r\n", deadline).decode("latin-1")
    lines = head.split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers.append((k.strip().lower(), v.strip()))
    resp = Response(int(status), reason[0] if reason else "", headers, b"", version)
    st = resp.status
    if head_only or st == 101 or st == 204 or st == 304 or 100 <= st < 200:
        return resp
    te = resp.header("transfer-encoding")
    cl = resp.header("content-length")
    if te and "chunked" in te.lower():
        body = bytearray()
        while True:
            size_line = reader.read_until(b"\r\n", deadline)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                reader.read_until(b"\r\n", deadline)
                break
            body += reader.read_exact(size, deadline)
            reader.read_exact(2, deadline)
        resp.body = bytes(body)
    elif cl is not None:
        resp.body = reader.read_exact(int(cl), deadline)
    else:
        resp.body = reader.read_to_eof(deadline)
    return resp


def connect(port, host="127.0.0.1", tls=False, timeout=5.0, rcvbuf=None):
    """A TCP (or TLS, unverified) connection; rcvbuf sets SO_RCVBUF before connecting."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def http_exchange(port, raw, nresponses=1, timeout=5.0, tls=False, head_only=False):
    """Send raw request bytes; return the list of the first nresponses responses.
    1xx interim responses are skipped."""
    s = connect(port, tls=tls, timeout=timeout)
    try:
        s.sendall(raw)
        r = Reader(s)
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < nresponses:
            resp = read_response(r, deadline, head_only=head_only)
            if 100 <= resp.status < 200 and resp.status != 101:
                continue
            out.append(resp)
        return out
    finally:
        s.close()


def http_request(port, method, path, headers=None, body=b"", timeout=5.0, tls=False):
    """One request on a fresh connection (Connection: close); returns a Response."""
    hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
    hdrs.update(headers or {})
    if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    raw = f"{method} {path} HTTP/1.1\r\n".encode()
    raw += b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs.items()) + b"\r\n" + body
    return http_exchange(port, raw, 1, timeout=timeout, tls=tls, head_only=(method == "HEAD"))[0]


def ws_handshake_request(port, path, key=None, extra=None, omit=()):
    """The bytes of an opening handshake; extra: dict of headers to add or replace,
    omit: header names to leave out."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    hdrs = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    hdrs.update(extra or {})
    for name in omit:
        hdrs.pop(name, None)
    raw = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return raw.encode(), key


class RawWS:
    def __init__(self, sock, reader, response):
        self.sock = sock
        self.reader = reader
        self.response = response

    @classmethod
    def connect(cls, port, path="/echo", extra=None, tls=False, timeout=5.0, expect=101, rcvbuf=None):
        s = connect(port, tls=tls, timeout=timeout, rcvbuf=rcvbuf)
        raw, key = ws_handshake_request(port, path, extra=extra)
        s.sendall(raw)
        r = Reader(s)
        resp = read_response(r, time.monotonic() + timeout, head_only=True)
        if expect is not None:
            assert resp.status == expect, f"handshake answered {resp}"
        if resp.status == 101:
            assert resp.header("sec-websocket-accept") == accept_key(key), resp
        return cls(s, r, resp)

    # ---- writing
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, mask=True, key=None, length=None):
        self.send_raw(encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, key=key, length=length))

    def send_close(self, code=None, reason=b"", raw_payload=None):
        if raw_payload is None:
            raw_payload = b"" if code is None else struct.pack("!H", code) + (
                reason.encode() if isinstance(reason, str) else reason)
        self.send_frame(OP_CLOSE, raw_payload)

    # ---- reading
    def recv_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        b0, b1 = self.reader.read_exact(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.reader.read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.reader.read_exact(8, deadline))[0]
        assert not (b1 & 0x80), "server frames must not be masked (RFC 6455 5.1)"
        payload = self.reader.read_exact(n, deadline)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload)

    def recv_message(self, timeout=5.0):
        """Next data message (reassembled), answering nothing; returns (opcode, payload)."""
        deadline = time.monotonic() + timeout
        op, data = None, b""
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode in (OP_PING, OP_PONG):
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"unexpected close frame {parse_close(f.payload)}")
            if op is None:
                op = f.opcode
            data += f.payload
            if f.fin:
                return op, data

    def expect_close(self, timeout=5.0):
        """Read frames until the server's close frame; return (code, reason).
        code is None for a close frame without a status. Raises AssertionError if the
        connection ends without a close frame."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            except Closed:
                raise AssertionError("server closed TCP without a close frame") from None
            if f.opcode == OP_CLOSE:
                return parse_close(f.payload)

    def expect_eof(self, timeout=5.0):
        """True if the TCP connection ends (after any remaining bytes) within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.reader._fill(deadline)
                self.reader.buf.clear()
        except Closed:
            return True
        except TimeoutError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_close(payload):
    if len(payload) == 0:
        return None, ""
    assert len(payload) >= 2, f"server sent a {len(payload)}-byte close payload"
    code = struct.unpack("!H", payload[:2])[0]
    return code, payload[2:].decode("utf-8")
