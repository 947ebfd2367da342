"""The evaluation gate: an adapter is promoted only on measured figures (DESIGN §5).

Each held-out example goes through the serving path (`evaluate_summaries`: the summarizer's own
prompt, its generator with the adapter, greedy, and its grounding check with extractive
fallback) and becomes an `Outcome`: what a reader would be shown. `metrics` scores outcomes per
article; `decide` compares a candidate with the serving model article by article with a paired
bootstrap, and promotes only when the primary figure (the share of articles that show generated
text that passed the check) improves beyond its confidence interval and no guardrail (ROUGE-L,
MiniLM cosine to the reference, mean support) gets significantly worse. `write_outputs` puts base
and candidate side by side for a person to read.

Simplifications: one reference per example (the snapshot's target); the bootstrap interval is
the plain percentile one (no BCa correction); no multiple-testing correction across guardrails
(a guardrail can only refuse, so each one added makes the gate more careful, not less).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from briefing.llm import Completion, GenerationTimeout
from briefing.summaries import Summary
from briefing.summarize import Request, Summarizer
from briefing.tuning.data import Example
from briefing.tuning.sources import novel_bigrams, source_text
from indexing import Embedder

STEMMED = frozenset({"en"})  # Porter stemming is English; stemming Bokmål with it mangles words
LABELS = {  # how reasons name each metric
    "generated": "the share of articles showing generated text",
    "rouge1": "ROUGE-1 F1",
    "rouge2": "ROUGE-2 F1",
    "rouge_l": "ROUGE-L F1",
    "cosine": "the MiniLM cosine to the reference",
    "novel_bigrams": "the novel-bigram share",
    "support": "the mean support of generated sentences",
}
_TOKEN = re.compile(r"\w+", re.UNICODE)
_BOOTSTRAP_CELLS = 4_000_000  # resampled indices held at once (32 MB of int64)


@dataclass(frozen=True)
class Outcome:
    """One eval article through the serving path."""

    example_id: str
    article_id: str
    language: str
    task: str
    generated: bool  # shown text is generated and passed the check (not the extractive fallback)
    text: str  # what a reader would be shown
    dropped: tuple[str, ...]  # generated sentences the check removed
    # Mean support of the sentences the model wrote (shown and dropped; 0.0 when it wrote none).
    # Not of the shown ones: the extractive fallback quotes the article at support 1.0, so that
    # figure falls whenever an adapter generates more, and as a guardrail it would refuse every
    # adapter that improves the primary figure.
    support: float
    reference: str  # the example's target
    source_text: str  # the article text (for novel bigrams)


@dataclass(frozen=True)
class Delta:
    """Candidate minus base: the mean paired difference and its bootstrap interval."""

    mean: float
    ci_low: float
    ci_high: float


def paired_bootstrap(
    base: Sequence[float], candidate: Sequence[float], *, n: int = 2000, seed: int = 0, level: float = 0.95
) -> Delta:
    """The mean of `candidate[i] - base[i]` with a percentile bootstrap interval at `level`:
    `n` resamples of the articles, the same resampled articles on both sides (so what is
    compared is the same article written twice). Deterministic for a seed."""
    diff = _differences(base, candidate)
    if not 0 < level < 1 or n < 1:
        raise ValueError(f"need 0 < level < 1 and n >= 1, got level={level}, n={n}")
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [diff[rng.integers(0, diff.size, (rows, diff.size))].mean(axis=1) for rows in _blocks(n, diff.size)]
    )
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Delta(float(diff.mean()), float(low), float(high))


def _differences(base: Sequence[float], candidate: Sequence[float]) -> npt.NDArray[np.float64]:
    before, after = np.asarray(base, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if before.ndim != 1 or before.shape != after.shape or before.size == 0:
        raise ValueError(f"need two equally long, non-empty lists, got {before.shape} and {after.shape}")
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        raise ValueError("figures must be finite (a NaN would make every interval NaN)")
    diff: npt.NDArray[np.float64] = after - before
    return diff


def _blocks(rounds: int, size: int) -> Iterator[int]:
    """Resample counts per batch, so memory stays bounded on large eval sets."""
    step = max(1, _BOOTSTRAP_CELLS // size)
    for start in range(0, rounds, step):
        yield min(step, rounds - start)


class UnicodeTokenizer:
    """rouge-score's default tokenizer drops every non-ASCII letter (æ, ø, å); this keeps them.
    Stems like rouge-score does (nltk's Porter, words over three letters) when `stem`."""

    def __init__(self, stem: bool) -> None:
        from nltk.stem import porter  # type: ignore[import-untyped]

        self.stemmer = porter.PorterStemmer() if stem else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _TOKEN.findall(text.lower())
        return [self.stemmer.stem(t) if self.stemmer and len(t) > 3 else t for t in tokens]


def metrics(outcomes: Sequence[Outcome], embedder: Embedder | None) -> dict[str, list[float]]:
    """Per-article figures, in `outcomes` order: generated (0/1), rouge1, rouge2, rouge_l (F1 of
    the shown text against the reference), cosine (when an embedder is given), novel_bigrams
    (against the article) and support. The reference figures cover only the outcomes that have a
    reference (a held-out article where nothing passed has none)."""
    figures: dict[str, list[float]] = {"generated": [float(o.generated) for o in outcomes]}
    referenced = [o for o in outcomes if o.reference.strip()]
    figures.update(_rouge(referenced))
    if embedder is not None:
        figures["cosine"] = _cosine(referenced, embedder)
    figures["novel_bigrams"] = [novel_bigrams(o.text, o.source_text) for o in outcomes]
    figures["support"] = [o.support for o in outcomes]
    return figures


def _rouge(outcomes: Sequence[Outcome]) -> dict[str, list[float]]:
    from rouge_score import rouge_scorer

    scorers = {
        stem: rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer(stem))
        for stem in (False, True)
    }
    scores = [scorers[o.language in STEMMED].score(o.reference, o.text) for o in outcomes]
    names = {"rouge1": "rouge1", "rouge2": "rouge2", "rouge_l": "rougeL"}
    return {key: [float(s[name].fmeasure) for s in scores] for key, name in names.items()}


def _cosine(outcomes: Sequence[Outcome], embedder: Embedder) -> list[float]:
    """Shown text against reference; the embedder's rows are unit vectors, so a dot product."""
    if not outcomes:
        return []
    vectors = embedder.embed_documents([o.text for o in outcomes] + [o.reference for o in outcomes])
    shown, reference = vectors[: len(outcomes)], vectors[len(outcomes) :]
    return [float(x) for x in np.einsum("ij,ij->i", shown, reference)]


@dataclass(frozen=True)
class GateRule:
    """Promote iff `primary`'s interval lies above zero and no guardrail's lies below it."""

    primary: str = "generated"
    guardrails: tuple[str, ...] = ("rouge_l", "cosine", "support")
    n: int = 2000  # bootstrap resamples
    seed: int = 0
    level: float = 0.95


@dataclass(frozen=True)
class GateReport:
    promote: bool
    reasons: tuple[str, ...]  # the verdict, then one sentence per checked figure
    deltas: Mapping[str, Delta]  # every metric, candidate minus base
    base: Mapping[str, float]  # means
    candidate: Mapping[str, float]
    n: int  # articles compared

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "deltas": {key: asdict(delta) for key, delta in self.deltas.items()},
            "base": dict(self.base),
            "candidate": dict(self.candidate),
            "n": self.n,
        }


def decide(
    base: Sequence[Outcome],
    candidate: Sequence[Outcome],
    embedder: Embedder | None,
    rule: GateRule = GateRule(),
) -> GateReport:
    """The gate: `candidate` against `base` on the same examples (paired by `example_id`; a
    ValueError names the ids only one side has). An embedder is needed when the rule names
    cosine."""
    pairs = paired(base, candidate)
    before = metrics([b for b, _ in pairs], embedder)
    after = metrics([c for _, c in pairs], embedder)
    _check_rule(rule, before)
    # a reference figure needs held-out articles with references: unmeasured without any
    measured = [key for key, values in before.items() if values]
    deltas = {
        key: paired_bootstrap(before[key], after[key], n=rule.n, seed=rule.seed, level=rule.level)
        for key in measured
    }
    means_before = {key: float(np.mean(before[key])) for key in measured}
    means_after = {key: float(np.mean(after[key])) for key in measured}
    gained = deltas[rule.primary].ci_low > 0
    worse = [g for g in rule.guardrails if g in deltas and deltas[g].ci_high < 0]
    lines = [
        _line(key, means_before[key], means_after[key], deltas[key], rule)
        if key in deltas
        else f"{_label(key)} was not measured: no held-out article has a reference."
        for key in _checked(rule)
    ]
    verdict = _verdict(gained, worse, rule, len(pairs))
    return GateReport(gained and not worse, (verdict, *lines), deltas, means_before, means_after, len(pairs))


def _check_rule(rule: GateRule, figures: Mapping[str, list[float]]) -> None:
    unknown = [key for key in _checked(rule) if key not in figures]
    if unknown:
        why = " (cosine needs an embedder)" if "cosine" in unknown else ""
        raise ValueError(f"the gate rule names {unknown}, not measured{why}; measured: {sorted(figures)}")


def _checked(rule: GateRule) -> list[str]:
    return list(dict.fromkeys([rule.primary, *rule.guardrails]))


def _verdict(gained: bool, worse: Sequence[str], rule: GateRule, articles: int) -> str:
    primary = LABELS.get(rule.primary, rule.primary)
    if gained and not worse:
        return f"Promote: on {articles} articles {primary} improved beyond its CI and no guardrail got worse."
    why = [f"{primary} did not improve beyond its CI"] if not gained else []
    why += [f"{LABELS.get(g, g)} got significantly worse" for g in worse]
    return f"Keep the current model: on {articles} articles {' and '.join(why)}."


def _line(key: str, before: float, after: float, delta: Delta, rule: GateRule) -> str:
    """'ROUGE-L F1 went from 0.212 to 0.198: -0.014 (95% CI -0.031 to +0.002), no significant change.'"""
    if delta.ci_low > 0:
        verdict = "above zero" if key == rule.primary else "significantly better"
    elif delta.ci_high < 0:
        verdict = "significantly worse"
    else:
        verdict = "the interval includes zero" if key == rule.primary else "no significant change"
    figure = f"{delta.mean:+.3f} ({rule.level:.0%} CI {delta.ci_low:+.3f} to {delta.ci_high:+.3f})"
    return f"{_label(key)} went from {before:.3f} to {after:.3f}: {figure}, {verdict}."


def _label(key: str) -> str:
    label = LABELS.get(key, key)
    return f"{label[0].upper()}{label[1:]}"


def paired(base: Sequence[Outcome], candidate: Sequence[Outcome]) -> list[tuple[Outcome, Outcome]]:
    """(base, candidate) per example, in `base` order; a ValueError when the example sets differ
    (naming the ids) or an id repeats."""
    before, after = _by_id(base, "base"), _by_id(candidate, "candidate")
    only_base = [i for i in before if i not in after]
    only_candidate = [i for i in after if i not in before]
    if only_base or only_candidate:
        raise ValueError(
            "base and candidate were evaluated on different examples: "
            f"missing from the candidate {_some(only_base)}; missing from the base {_some(only_candidate)}"
        )
    if not before:
        raise ValueError("no outcomes to compare")
    return [(before[i], after[i]) for i in before]


def _by_id(outcomes: Iterable[Outcome], side: str) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for outcome in outcomes:
        if outcome.example_id in out:
            raise ValueError(f"the {side} outcomes hold example {outcome.example_id} twice")
        out[outcome.example_id] = outcome
    return out


def _some(ids: Sequence[str], shown: int = 10) -> str:
    if not ids:
        return "none"
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{len(ids)} ({', '.join(ids[:shown])}{more})"


def evaluate_summaries(
    summarizer: Summarizer,
    requests: Sequence[Request],
    examples: Sequence[Example],
    adapter: str | None,
    *,
    progress: bool = False,
) -> list[Outcome]:
    """Each request (with its evidence: `article_requests`, or `with_evidence` for an update) as
    the service would write it with `adapter` (None: the base model): the summarizer's prompt,
    its generator, greedy with the template's other params, its grounding check and fallback.
    `examples[i]` is the reference for `requests[i]` (same article and template). Nothing is
    stored. A generation that times out with no text counts as the fallback a reader would get."""
    if len(requests) != len(examples):
        raise ValueError(f"{len(requests)} requests but {len(examples)} examples")
    for request, example in zip(requests, examples, strict=True):
        _check_match(request, example)
    pairs = list(zip(requests, examples, strict=True))
    return [_outcome(summarizer, r, e, adapter) for r, e in _bar(pairs, progress, adapter)]


def _check_match(request: Request, example: Example) -> None:
    served = (request.record.article.id, request.template.id)
    if served != (example.article_id, example.task):
        raise ValueError(
            f"example {example.id} is a reference for {example.article_id} ({example.task}), "
            f"but its request is for {served[0]} ({served[1]})"
        )


def _bar(
    pairs: list[tuple[Request, Example]], progress: bool, adapter: str | None
) -> Iterable[tuple[Request, Example]]:
    if not progress:
        return pairs
    from tqdm.auto import tqdm

    bar: Iterable[tuple[Request, Example]] = tqdm(
        pairs, desc=f"evaluating {adapter or 'base model'}", unit="article"
    )
    return bar


def _outcome(summarizer: Summarizer, request: Request, example: Example, adapter: str | None) -> Outcome:
    summary = served(summarizer, request, adapter)
    written = [s.score for s in summary.sentences if not s.extractive] + [s.score for s in summary.dropped]
    return Outcome(
        example_id=example.id,
        article_id=example.article_id,
        language=example.language,
        task=example.task,
        generated=not summary.extractive,
        text=summary.text,
        dropped=tuple(s.text for s in summary.dropped),
        support=float(np.mean(written)) if written else 0.0,
        reference=example.target,
        source_text=source_text(request),
    )


def served(summarizer: Summarizer, request: Request, adapter: str | None) -> Summary:
    """`request` written by `adapter` and checked as a stored draft would be (stored nowhere)."""
    params = replace(request.template.params, temperature=0.0)  # greedy: the gate must be repeatable
    start = time.monotonic()
    try:
        name = summarizer.generator_adapter(request, adapter)  # an adapter set: the language's part
        (completion,) = summarizer.generator.generate([summarizer.chat(request)], params, name)
    except GenerationTimeout:
        model = summarizer.generator.model
        completion = Completion("", model, 0, 0, time.monotonic() - start, "timeout")
    return summarizer.draft(request, completion, time.monotonic() - start)


def write_outputs(path: Path, base: Sequence[Outcome], candidate: Sequence[Outcome]) -> Path:
    """JSONL, one line per example: the reference, then base and candidate side by side (shown
    text, dropped sentences, support), for a person to read. Written atomically. It quotes the
    articles, so keep it under DATA_DIR, out of the repository."""
    lines = [json.dumps(_side_by_side(b, c), ensure_ascii=False) for b, c in paired(base, candidate)]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in lines))
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def _side_by_side(base: Outcome, candidate: Outcome) -> dict[str, Any]:
    def side(o: Outcome) -> dict[str, Any]:
        return {"generated": o.generated, "text": o.text, "dropped": list(o.dropped), "support": o.support}

    return {
        "example_id": base.example_id,
        "article_id": base.article_id,
        "language": base.language,
        "task": base.task,
        "reference": base.reference,
        "base": side(base),
        "candidate": side(candidate),
    }
