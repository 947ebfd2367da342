"""The `LikelihoodScorer` contract on both scorers and the cache, real, on the packaged SmolLM2 GGUF."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from briefing import GeneratorUnavailable, LikelihoodScorer, make_scorer
from briefing.llm import CachedScorer, LlamaCppScorer, TransformersScorer, dequantized, packaged_gguf
from indexing import SentenceTransformerEmbedder
from server.container import build_checker
from server.settings import Settings

pytestmark = pytest.mark.slow

CONTEXT = (
    "Article:\nThe mayor of Oslo, Marianne Borgen, resigned on Tuesday after a dispute over the "
    "city budget.\n\nOne-sentence summary of the article above:\n"
)
TOLD = "The mayor of Oslo resigned on Tuesday."
UNTOLD = "The mayor of Bergen won an award for her cooking."
# Over LlamaCppScorer.SHORT_CONTEXT tokens: scored in its main context, not the short one.
LONG_CONTEXT = CONTEXT.replace("budget.", "budget. " + "The city council met on Monday. " * 8)


@pytest.fixture(scope="module")
def transformers_scorer(model_cache: Path) -> LikelihoodScorer:
    scorer = make_scorer("transformers", "packaged:SmolLM2-135M-Instruct", cache_dir=model_cache, threads=2)
    assert isinstance(scorer, TransformersScorer)
    return scorer


@pytest.fixture(params=["llamacpp", "transformers", "cached llamacpp"])
def scorer(request: pytest.FixtureRequest, tmp_path: Path) -> LikelihoodScorer:
    name = "transformers_scorer" if request.param == "transformers" else "llamacpp_scorer"
    scorer: LikelihoodScorer = request.getfixturevalue(name)
    if request.param.startswith("cached"):
        return CachedScorer(scorer, tmp_path / "logprobs.sqlite", key="llamacpp")
    return scorer


def test_one_log_probability_per_token_of_each_continuation(scorer: LikelihoodScorer) -> None:
    told, untold = scorer.logprobs(CONTEXT, [TOLD, UNTOLD])
    assert 6 <= told.size <= 14 and 8 <= untold.size <= 16
    assert np.all(told <= 0) and np.all(untold <= 0) and np.all(np.isfinite(told))
    assert scorer.logprobs(CONTEXT, []) == []


def test_what_the_context_says_is_more_likely_than_what_it_does_not(scorer: LikelihoodScorer) -> None:
    told, untold = scorer.logprobs(CONTEXT, [TOLD, UNTOLD])
    assert told.mean() > untold.mean() + 1.0


def test_scores_do_not_depend_on_the_other_continuations(scorer: LikelihoodScorer) -> None:
    [alone] = scorer.logprobs(CONTEXT, [TOLD])
    _, after = scorer.logprobs(CONTEXT, [UNTOLD, TOLD])
    np.testing.assert_allclose(alone, after, atol=1e-3)


def test_scores_do_not_depend_on_what_was_scored_before(scorer: LikelihoodScorer) -> None:
    # llama.cpp keeps the last context's cache for a context that begins the same way, and runs
    # short contexts (the check's prior) in a second one: neither may leak into an answer.
    [first] = scorer.logprobs(LONG_CONTEXT, [TOLD])
    other = LONG_CONTEXT.replace("resigned on Tuesday", "was re-elected on Sunday")  # same beginning
    scorer.logprobs(other, [UNTOLD])
    [prior] = scorer.logprobs("One-sentence summary:\n", [TOLD])
    [again] = scorer.logprobs(LONG_CONTEXT, [TOLD])
    [changed] = scorer.logprobs(other, [TOLD])
    np.testing.assert_allclose(again, first, atol=1e-4)
    assert not np.allclose(changed, first, atol=1e-2) and not np.allclose(prior, first, atol=1e-2)
    [after_short] = scorer.logprobs("One-sentence summary:\n", [TOLD])
    np.testing.assert_allclose(after_short, prior, atol=1e-4)


def test_a_llamacpp_call_that_fails_midway_leaves_no_stale_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = LlamaCppScorer(packaged_gguf(), threads=2, context_tokens=512)
    [fresh] = scorer.logprobs(LONG_CONTEXT, [TOLD])
    other = LONG_CONTEXT.replace("resigned on Tuesday", "was re-elected on Sunday")
    llama, real_eval = scorer._llama, scorer._llama.eval
    calls = iter([real_eval, _fail])  # the context evaluates, the continuation fails

    monkeypatch.setattr(llama, "eval", lambda tokens: next(calls, real_eval)(tokens))
    with pytest.raises(RuntimeError, match="decode failed"):
        scorer.logprobs(other, [UNTOLD])
    [again] = scorer.logprobs(LONG_CONTEXT, [TOLD])
    np.testing.assert_allclose(again, fresh, atol=1e-4)


def _fail(tokens: Sequence[int]) -> None:
    raise RuntimeError("decode failed")


@pytest.mark.parametrize("kind", ["llamacpp", "transformers"])
def test_a_context_longer_than_the_window_keeps_its_beginning(kind: str, model_cache: Path) -> None:
    model = "packaged:SmolLM2-135M-Instruct"
    small: LikelihoodScorer = (
        LlamaCppScorer(packaged_gguf(), threads=2, context_tokens=256)
        if kind == "llamacpp"
        else TransformersScorer(dequantized(model, model_cache), threads=2, context_tokens=256)
    )
    long = CONTEXT.replace("budget.", "budget. " + "The weather was mild. " * 100)
    told, untold = small.logprobs(long, [TOLD, UNTOLD])
    assert np.all(np.isfinite(told)) and told.mean() > untold.mean()  # the mayor is still in view


def test_llamacpp_agrees_with_the_transformers_reference(
    llamacpp_scorer: LikelihoodScorer, transformers_scorer: LikelihoodScorer
) -> None:
    # The same GGUF weights: only llama.cpp's quantized matrix products differ.
    for fast, reference in zip(
        llamacpp_scorer.logprobs(CONTEXT, [TOLD, UNTOLD]),
        transformers_scorer.logprobs(CONTEXT, [TOLD, UNTOLD]),
        strict=True,
    ):
        assert fast.shape == reference.shape
        assert abs(fast.mean() - reference.mean()) < 0.15


class _Counting:
    def __init__(self, scorer: LikelihoodScorer) -> None:
        self.scorer, self.asked = scorer, 0

    def logprobs(self, context: str, continuations: Sequence[str], tail: str = "") -> list[np.ndarray]:
        self.asked += len(continuations)
        return self.scorer.logprobs(context, continuations, tail)


def test_the_cache_asks_only_for_what_it_has_not_scored(
    llamacpp_scorer: LikelihoodScorer, tmp_path: Path
) -> None:
    counting = _Counting(llamacpp_scorer)
    first = CachedScorer(counting, tmp_path / "logprobs.sqlite", key="llamacpp")
    [told] = first.logprobs(CONTEXT, [TOLD])
    again = CachedScorer(counting, tmp_path / "logprobs.sqlite", key="llamacpp")  # a later run
    cached_told, untold = again.logprobs(CONTEXT, [TOLD, UNTOLD])
    np.testing.assert_array_equal(cached_told, told)
    assert untold.mean() < told.mean()
    assert counting.asked == 2 and (again.hits, again.misses) == (1, 1)
    other_model = CachedScorer(counting, tmp_path / "logprobs.sqlite", key="another model")
    other_model.logprobs(CONTEXT, [TOLD])
    assert counting.asked == 3


def test_an_unknown_scorer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GROUNDING_LIKELIHOOD must be one of"):
        make_scorer("bert", "packaged:SmolLM2-135M-Instruct", cache_dir=tmp_path)
    assert make_scorer("off", "anything", cache_dir=tmp_path) is None


def test_the_settings_choose_the_scorer(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    env = {"DATA_DIR": str(tmp_path)}
    assert isinstance(build_checker(Settings.from_env(env), embedder).scorer, LlamaCppScorer)
    assert build_checker(Settings.from_env({**env, "GROUNDING_LIKELIHOOD": "off"}), embedder).scorer is None
    with pytest.raises(GeneratorUnavailable, match="needs a GGUF model"):
        build_checker(Settings.from_env({**env, "GROUNDING_MODEL": str(tmp_path)}), embedder)
