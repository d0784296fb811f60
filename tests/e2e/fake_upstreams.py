"""Fake streaming LLM APIs for the agent tests: an OpenAI-compatible chat-completions server and an
Anthropic Messages server, on 127.0.0.1 free ports, in a thread of the test process (plain
http.server, no network beyond loopback).

    up = FakeUpstream("openai", key="sk-test")      # or "anthropic"
    hub flag: --agent "gpt=openai:ok,ms=30;base-url=" + up.base_url + ";key-env=FAKE_KEY"
    up.requests      # every request: {"path", "headers" (lower-case names), "body" (parsed JSON)}
    up.max_active    # most replies in flight at once (a reply is over when its last event is sent)
    up.disconnects   # streams the client (the hub) abandoned before they were over
    up.close()

The MODEL names the behaviour, with parameters after commas ("ok,ms=300,chunk=3"):
    ok          a reply "Reply to: <last user text>" in chunks of `chunk` chars (4), `ms` apart (20)
    http500     500 with a JSON error document ("boom")
    http401     401 with the provider's authentication error document
    silent      200 text/event-stream, then nothing until the client goes (60 s at most)
    endless     a chunk every `ms` (200) until the client goes
    garbage     one good chunk, then a data line that is not JSON
    truncated   two chunks, then the response ends without [DONE] / message_stop
    streamerror two chunks, then the provider's in-stream error
    badutf8     a chunk whose JSON string holds raw invalid UTF-8 bytes ("ok \\xff done")
    nonstream   200 application/json: a whole, non-streamed completion
    crlf        like ok, with CRLF line ends and every event written in 3-byte pieces
Every response body is sent with chunked transfer encoding, as the real APIs do.
"""
import json
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _params(model):
    parts = (model or "ok").split(",")
    out = {"name": parts[0]}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        out[k] = v
    return out


def reply_text(body):
    """The reply the `ok` behaviour streams for a request body."""
    last = ""
    for m in body.get("messages", []):
        if m.get("role") == "user":
            c = m.get("content")
            last = c if isinstance(c, str) else json.dumps(c)
    return "Reply to: " + last


def split_text(text, n):
    return [text[i:i + n] for i in range(0, len(text), n)] or [""]


class _Gone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    # ---- output helpers ----------------------------------------------------
    def _start(self, status, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data, pieces=1):
        if isinstance(data, str):
            data = data.encode()
        step = max(1, -(-len(data) // pieces)) if pieces > 1 else len(data)
        try:
            for i in range(0, len(data), step or 1):
                part = data[i:i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                if pieces > 1:
                    time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise _Gone()

    def _end(self):
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            raise _Gone()

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _over(self):
        """The reply is over once its last event goes out: from then on the client may start the next
        request, so `active` drops just before that write (an exact count of overlapping streams)."""
        up = self.server.upstream
        with up.lock:
            if not self._counted_out:
                self._counted_out = True
                up.active -= 1

    def _client_gone(self, wait):
        """True when the peer closed the connection (waits up to `wait` s for a sign)."""
        r, _, _ = select.select([self.connection], [], [], wait)
        if not r:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # ---- the request -------------------------------------------------------
    def do_POST(self):
        up = self.server.upstream
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_raw": raw.decode("latin-1")}
        self._counted_out = False
        with up.lock:
            up.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body, "peer": self.client_address})
            up.active += 1
            up.max_active = max(up.max_active, up.active)
        try:
            if self.path != up.path:
                self._json(404, {"error": {"message": "no such path " + self.path, "type": "not_found"}})
                return
            if not up.authorised(self.headers):
                if up.kind == "openai":
                    self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                else:
                    self._json(401, {"type": "error", "error": {"type": "authentication_error",
                                                                "message": "invalid x-api-key"}})
                return
            p = _params(body.get("model"))
            getattr(self, "_" + up.kind)(p, body)
        except _Gone:
            with up.lock:
                up.disconnects += 1
        finally:
            with up.lock:
                if not self._counted_out:
                    up.active -= 1
                up.finished += 1

    # ---- OpenAI -----------------------------------------------------------------
    def _openai(self, p, body):
        name = p["name"]
        ms = float(p.get("ms", 200 if name == "endless" else 20)) / 1000
        chunk = int(p.get("chunk", 4))
        if name == "http500":
            return self._json(500, {"error": {"message": "boom", "type": "server_error"}})
        if name == "http401":
            return self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        if name == "nonstream":
            return self._json(200, {"id": "c1", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply_text(body)}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 5}})
        eol = "\r\n" if name == "crlf" else "\n"
        pieces = 20 if name == "crlf" else 1

        def ev(obj):
            self._chunk("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + eol + eol, pieces)

        def delta(text, finish=None):
            ev({"id": "c1", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text} if text is not None else {},
                             "finish_reason": finish}]})

        self._start(200, "text/event-stream; charset=utf-8")
        if name == "silent":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self._client_gone(0.1):
                    raise _Gone()
            return
        self._chunk(": keep-alive comment" + eol + eol)
        ev({"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        if name == "endless":
            deadline = time.monotonic() + 60
            i = 0
            while time.monotonic() < deadline:
                delta("tick %d " % i)
                i += 1
                if self._client_gone(ms):
                    raise _Gone()
            return
        if name == "garbage":
            delta("fine so far")
            ev("{this is not json")
            return self._end()
        if name == "badutf8":
            self._chunk(b'data: {"choices":[{"index":0,"delta":{"content":"ok \xff done"},"finish_reason":null}]}\n\n')
            delta(None, "stop")
            ev("[DONE]")
            return self._end()
        parts = split_text(reply_text(body), chunk)
        if name in ("truncated", "streamerror"):
            for t in parts[:2]:
                delta(t)
                time.sleep(ms)
            if name == "streamerror":
                ev({"error": {"message": "model overloaded mid-stream", "type": "server_error"}})
            return self._end()
        for t in parts:
            delta(t)
            time.sleep(ms)
        delta(None, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            ev({"id": "c1", "object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": len(parts), "total_tokens": 11 + len(parts)}})
        self._over()
        ev("[DONE]")
        self._end()

    # ---- Anthropic ------------------------------------------------------------------
    def _anthropic(self, p, body):
        name = p["name"]
        ms = float(p.get("ms", 200 if name == "endless" else 20)) / 1000
        chunk = int(p.get("chunk", 4))
        if name == "http500":
            return self._json(500, {"type": "error", "error": {"type": "api_error", "message": "boom"}})
        if name == "http401":
            return self._json(401, {"type": "error", "error": {"type": "authentication_error",
                                                               "message": "invalid x-api-key"}})
        if name == "nonstream":
            return self._json(200, {"id": "m1", "type": "message", "role": "assistant",
                                    "content": [{"type": "text", "text": reply_text(body)}],
                                    "stop_reason": "end_turn", "usage": {"input_tokens": 9, "output_tokens": 4}})
        eol = "\r\n" if name == "crlf" else "\n"
        pieces = 20 if name == "crlf" else 1

        def ev(kind, obj):
            self._chunk("event: " + kind + eol + "data: " + (obj if isinstance(obj, str) else json.dumps(obj)) +
                        eol + eol, pieces)

        def delta(text):
            ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": text}})

        self._start(200, "text/event-stream")
        if name == "silent":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self._client_gone(0.1):
                    raise _Gone()
            return
        ev("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": body.get("model"),
            "stop_reason": None, "usage": {"input_tokens": 9, "output_tokens": 1}}})
        ev("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}})
        ev("ping", {"type": "ping"})
        if name == "endless":
            deadline = time.monotonic() + 60
            i = 0
            while time.monotonic() < deadline:
                delta("tick %d " % i)
                i += 1
                if self._client_gone(ms):
                    raise _Gone()
            return
        if name == "garbage":
            delta("fine so far")
            ev("content_block_delta", "{this is not json")
            return self._end()
        if name == "badutf8":
            self._chunk(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                        b'"delta":{"type":"text_delta","text":"ok \xff done"}}\n\n')
            ev("message_stop", {"type": "message_stop"})
            return self._end()
        parts = split_text(reply_text(body), chunk)
        if name in ("truncated", "streamerror"):
            for t in parts[:2]:
                delta(t)
                time.sleep(ms)
            if name == "streamerror":
                ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            return self._end()
        for t in parts:
            delta(t)
            time.sleep(ms)
        ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": len(parts)}})
        self._over()
        ev("message_stop", {"type": "message_stop"})
        self._end()


class FakeUpstream:
    def __init__(self, kind, key=None, tls=None):
        """tls: (cert, key) files to serve HTTPS instead of HTTP."""
        assert kind in ("openai", "anthropic")
        self.tls = tls
        self.kind = kind
        self.key = key
        self.path = "/v1/chat/completions" if kind == "openai" else "/v1/messages"
        self.lock = threading.Lock()
        self.requests = []
        self.active = 0
        self.max_active = 0
        self.finished = 0
        self.disconnects = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.upstream = self
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def base_url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}" + ("/v1" if self.kind == "openai" else "")

    def authorised(self, headers):
        if self.key is None:
            return True
        if self.kind == "openai":
            return headers.get("Authorization") == "Bearer " + self.key
        return headers.get("x-api-key") == self.key and bool(headers.get("anthropic-version"))

    def count(self):
        with self.lock:
            return len(self.requests)

    def wait_for(self, pred, timeout=5.0):
        """Wait until pred(self) holds (checked under the lock); returns whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred(self):
                    return True
            time.sleep(0.02)
        with self.lock:
            return pred(self)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
