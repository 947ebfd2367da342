"""The `Embedder` contract, run on every implementation that runs here."""

from __future__ import annotations

import numpy as np
import pytest

from indexing import EMBEDDERS, PACKAGED_MINILM, Embedder, make_embedder

IMPLEMENTATIONS = [(kind, PACKAGED_MINILM) for kind in EMBEDDERS]


@pytest.fixture(scope="module", params=IMPLEMENTATIONS, ids=[k for k, _ in IMPLEMENTATIONS])
def impl(request: pytest.FixtureRequest) -> Embedder:
    kind, model = request.param
    return make_embedder(kind, model)


def test_shape_dtype_and_unit_norm(impl: Embedder) -> None:
    texts = ["The ferry terminal vote", "Håndballaget vant semifinalen", "x"]
    vectors = impl.embed_documents(texts)
    assert vectors.shape == (3, impl.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert impl.embed_documents([]).shape == (0, impl.dim)


def test_order_preserved_and_deterministic(impl: Embedder) -> None:
    a, b = "Council approves ferry terminal", "Striker needs knee surgery"
    forward = impl.embed_documents([a, b])
    backward = impl.embed_documents([b, a])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)


def test_query_is_comparable_with_documents(impl: Embedder) -> None:
    docs = impl.embed_documents(
        ["The striker tore a knee ligament and needs surgery.", "The council approved the budget."]
    )
    query = impl.embed_query("knee injury operation for the football player")
    assert query.shape == (impl.dim,)
    scores = docs @ query
    assert scores[0] > scores[1] + 0.1


def test_unknown_embedder_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown embedder 'nope'"):
        make_embedder("nope", PACKAGED_MINILM)
