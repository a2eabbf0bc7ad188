"""A JSON HTTP API served on 127.0.0.1 by a test stand-in; refused requests are kept in ``errors``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


class BadRequest(Exception):
    """A request the real server would refuse (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class JsonApi:
    """Serves ``answer(method, path, query, body)`` until ``close()``; one request at a time."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, answer = api.handle(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        """Answer one request; a ``BadRequest`` becomes the API's error answer and is recorded."""
        url = urlsplit(target)
        self.requests.append((method, url.path))
        try:
            with self._lock:
                return self.answer(method, url.path, dict(parse_qsl(url.query)), json.loads(body) if body else None)
        except BadRequest as exc:
            self.errors.append(f"{method} {url.path}: {exc}")
            return exc.status, self.error_body(str(exc))
        except Exception as exc:  # a stand-in bug or a request shape it does not know: never silent
            self.errors.append(f"{method} {url.path}: unhandled {exc!r}")
            return 500, self.error_body(f"Service internal error: {exc!r}")

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """The status and JSON answer of one request (raise ``BadRequest`` to refuse it)."""
        raise NotImplementedError

    def error_body(self, message: str) -> Any:
        """How the API words an error."""
        return {"error": message}
