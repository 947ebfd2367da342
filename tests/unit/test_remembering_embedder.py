"""The grounding checks' embedder keeps vectors (server.parts.RememberingEmbedder): the same
vectors as the model's, in the caller's order, only unknown texts sent to the model, a bounded
memory, and safe under concurrent callers. On the real packaged MiniLM model."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from indexing import SentenceTransformerEmbedder
from server.parts import RememberingEmbedder

pytestmark = pytest.mark.slow
TEXTS = [
    "The council voted 27 to 22 for the new ferry quay.",
    "Nordvik Laks offered 41 kroner a share.",
    "The mayor will answer questions on Friday.",
    "Ticket prices rise by 12 percent in March.",
    "Fog closed Havnby airport for six hours.",
]


def test_the_same_vectors_in_the_callers_order(embedder: SentenceTransformerEmbedder) -> None:
    remembering = RememberingEmbedder(embedder)
    asked = [TEXTS[2], TEXTS[0], TEXTS[2], TEXTS[1]]  # a duplicate, out of order
    got = remembering.embed_documents(asked)
    assert got.dtype == np.float32 and got.shape == (4, embedder.dim)
    np.testing.assert_allclose(got, embedder.embed_documents(asked), atol=1e-5)
    assert (remembering.hits, remembering.misses, len(remembering)) == (0, 3, 3)
    again = remembering.embed_documents([TEXTS[1], TEXTS[3]])  # one kept, one new
    np.testing.assert_allclose(again, embedder.embed_documents([TEXTS[1], TEXTS[3]]), atol=1e-5)
    assert (remembering.hits, remembering.misses) == (1, 4)
    assert remembering.embed_documents([]).shape == (0, embedder.dim)
    assert remembering.dim == embedder.dim and remembering.name == embedder.name


def test_memory_is_bounded_least_recently_used_out(embedder: SentenceTransformerEmbedder) -> None:
    remembering = RememberingEmbedder(embedder, size=3)
    remembering.embed_documents(TEXTS[:3])
    remembering.embed_documents([TEXTS[0]])  # used again: now the newest
    remembering.embed_documents(TEXTS[3:5])  # two more: the two least recently used leave
    assert len(remembering) == 3
    before = remembering.misses
    remembering.embed_documents([TEXTS[0], TEXTS[4]])
    assert remembering.misses == before  # both kept
    remembering.embed_documents([TEXTS[1]])
    assert remembering.misses == before + 1  # it had left


def test_concurrent_callers_each_get_their_own_vectors(embedder: SentenceTransformerEmbedder) -> None:
    remembering = RememberingEmbedder(embedder, size=4)
    expected = {t: v for t, v in zip(TEXTS, embedder.embed_documents(TEXTS), strict=True)}
    failures: list[str] = []

    def caller(offset: int) -> None:
        for round_ in range(6):
            asked = [TEXTS[(offset + round_ + k) % len(TEXTS)] for k in range(3)]
            got = remembering.embed_documents(asked)
            if not all(np.allclose(g, expected[t], atol=1e-5) for g, t in zip(got, asked, strict=True)):
                failures.append(f"caller {offset}, round {round_}")

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(remembering) <= 4
