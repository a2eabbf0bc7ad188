"""A local receiver of Loki's push API that checks the exact JSON format, for tests."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_LABELS = 15  # Loki's default max_label_names_per_series


class LokiReceiver:
    """``POST /loki/api/v1/push`` on ``host``; ``up = False`` answers 503 like a sick Loki."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.lines: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.up = True
        self._last: dict[tuple[tuple[str, str], ...], int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not receiver.up:
                    self._answer(503, "unavailable")
                    return
                problem = receiver.accept(self.path, self.headers.get("Content-Type", ""), body)
                self._answer(400 if problem else 204, problem or "")

            def _answer(self, status: int, text: str) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accept(self, path: str, content_type: str, body: bytes) -> str | None:
        """Validate one push as Loki would; store its lines; return the problem, if any."""
        problem = self._check(path, content_type, body)
        if problem:
            self.errors.append(problem)
        return problem

    def _check(self, path: str, content_type: str, body: bytes) -> str | None:
        if path != "/loki/api/v1/push":
            return f"wrong path {path}"
        if not content_type.startswith("application/json"):
            return f"wrong content type {content_type!r}"
        data = json.loads(body)
        if set(data) != {"streams"} or not isinstance(data["streams"], list):
            return "body must be {'streams': [...]}"
        accepted = []
        for stream in data["streams"]:
            labels = stream.get("stream")
            if not isinstance(labels, dict) or not labels or len(labels) > MAX_LABELS:
                return f"bad stream labels {labels!r}"
            if not all(LABEL_NAME.match(k) and isinstance(v, str) for k, v in labels.items()):
                return f"bad label name or value in {labels!r}"
            key = tuple(sorted(labels.items()))
            last = self._last.get(key, 0)
            for value in stream.get("values", []):
                if not isinstance(value, list) or len(value) not in (2, 3):
                    return f"value must be [ts, line] or [ts, line, metadata]: {value!r}"
                if not (isinstance(value[0], str) and value[0].isdigit() and len(value[0]) >= 18):
                    return f"timestamp must be a string of unix nanoseconds: {value[0]!r}"
                if not isinstance(value[1], str):
                    return f"line must be a string: {value[1]!r}"
                if len(value) == 3 and not all(isinstance(k, str) and isinstance(v, str) for k, v in value[2].items()):
                    return f"structured metadata must map strings to strings: {value[2]!r}"
                if int(value[0]) < last:
                    return f"entry out of order in stream {labels}: {value[0]} < {last}"
                last = int(value[0])
                accepted.append(
                    {
                        "labels": labels,
                        "ts": value[0],
                        "line": value[1],
                        "metadata": value[2] if len(value) == 3 else {},
                    }
                )
            self._last[key] = last
        self.lines += accepted
        return None

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
