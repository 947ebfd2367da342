"""Grounded self-training: the model's own sampled summaries as targets, when the checker passes them.

Per article request, a few completions are sampled and checked as drafts (`Summarizer.draft`). A
candidate becomes a target only when the grounding check passes every generated sentence with a
margin and it says more than a copy of the article's words; the best kept candidate against the
worst rejected one is a preference pair. Rows are built as `briefing.tuning.sources` builds the
editor's: the serving chat, the template's form, every article the prompt was written from.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from briefing.grounding import split_sentences
from briefing.llm import Completion, GenerationError, GenerationParams
from briefing.prompts import parse_points
from briefing.summaries import Summary
from briefing.summarize import Request, Summarizer
from briefing.tuning.data import Example, PreferencePair, as_chat, example, pair
from briefing.tuning.sources import articles_of, formatted, novel_bigrams, source_text


@dataclass(frozen=True)
class _Candidate:
    seed: int
    adapter: str | None
    completion: Completion
    draft: Summary
    target: str  # its generated sentences that passed, as the template asks for them
    written: str  # everything it wrote (kept and dropped), as the template asks for them
    novel: float
    rejected_for: str | None  # None: kept as a target

    @property
    def quality(self) -> tuple[int, int, float]:
        """Higher is better: has a generated sentence, fewer dropped, higher least support."""
        scores = [s.score for s in self.draft.sentences if not s.extractive]
        return (bool(scores), -len(self.draft.dropped), min(scores, default=0.0))


def self_training(
    summarizer: Summarizer,
    requests: Sequence[Request],
    *,
    candidates: int = 4,
    temperature: float = 0.8,
    margin: float = 0.05,
    min_novel: float = 0.2,
    threshold: float,
    adapter: str | None = None,
    deadline_s: float | None = None,
    progress: bool = False,
) -> tuple[list[Example], list[PreferencePair], dict[str, Any]]:
    """Targets sampled from the model itself. Per request, `candidates` completions (seeds 1..n at
    `temperature`, from `adapter` or the base model) are checked as drafts (`Summarizer.draft`).
    A candidate is kept as a target when it is not extractive, nothing it wrote was dropped, every
    generated sentence scores at least `threshold + margin`, and at least `min_novel` of its word
    bigrams are absent from the article (not a copy of the lead). Per request, the best kept
    candidate against the worst rejected one (by dropped count, then least support) is a
    preference pair. Sampling stops at `deadline_s` (stats say so). Stats: requests, sampled,
    kept, kept_share, novel_bigrams (mean of kept), pairs, errors, rejected by reason, seconds."""
    start = time.monotonic()
    examples: list[Example] = []
    pairs: list[PreferencePair] = []
    stats: Counter[str] = Counter()
    kept_novel: list[float] = []
    stopped = False
    for request in _progress(requests, progress):
        if deadline_s is not None and time.monotonic() - start > deadline_s:
            stopped = True
            break
        stats["requests"] += 1
        sampled = [
            _judged(c, (threshold, margin, min_novel))
            for c in _sample(summarizer, request, candidates, temperature, adapter, stats)
        ]
        kept = [c for c in sampled if c.rejected_for is None]
        stats.update(f"rejected_{c.rejected_for}" for c in sampled if c.rejected_for)
        kept_novel += [c.novel for c in kept]
        examples += _self_examples(summarizer, request, kept)
        pairs += _self_pair(summarizer, request, sampled)
    return examples, pairs, _self_stats(stats, kept_novel, len(examples), len(pairs), stopped, start)


def _progress(requests: Sequence[Request], progress: bool) -> Iterable[Request]:
    if not progress:
        return requests
    from tqdm.auto import tqdm

    bar: Iterable[Request] = tqdm(requests, desc="self-training candidates", unit="article")
    return bar


def _sample(
    summarizer: Summarizer,
    request: Request,
    candidates: int,
    temperature: float,
    adapter: str | None,
    stats: Counter[str],
) -> list[_Candidate]:
    """The request's candidates, checked; one that fails to generate is counted and left out."""
    chat = summarizer.chat(request)
    name = summarizer.generator_adapter(request, adapter)  # an adapter set: the language's part
    out: list[_Candidate] = []
    for seed in range(1, candidates + 1):
        params: GenerationParams = replace(request.template.params, temperature=temperature, seed=seed)
        try:
            (completion,) = summarizer.generator.generate([chat], params, name)
        except GenerationError:
            stats["errors"] += 1
            continue
        stats["sampled"] += 1
        written_by = summarizer.writer(request.record.article.language, adapter)
        out.append(_candidate(summarizer, request, (seed, written_by), completion))
    return out


def _candidate(
    summarizer: Summarizer, request: Request, by: tuple[int, str | None], completion: Completion
) -> _Candidate:
    draft = summarizer.draft(request, completion)
    template = request.template
    generated = [s.text for s in draft.sentences if not s.extractive]
    written = [s for p in parse_points(completion.text, template.max_sentences) for s in split_sentences(p)]
    target = formatted(generated, template)
    novel = novel_bigrams(" ".join(generated), source_text(request))
    return _Candidate(*by, completion, draft, target, formatted(written, template), novel, None)


def _judged(candidate: _Candidate, thresholds: tuple[float, float, float]) -> _Candidate:
    """The candidate with the first reason it is not a target, if any."""
    threshold, margin, min_novel = thresholds
    draft = candidate.draft
    scores = [s.score for s in draft.sentences if not s.extractive]
    if not scores:
        reason: str | None = "extractive"
    elif draft.dropped:
        reason = "dropped"
    elif min(scores) < threshold + margin:
        reason = "margin"
    elif candidate.novel < min_novel:
        reason = "copy"
    else:
        reason = None
    return replace(candidate, rejected_for=reason)


def _self_meta(request: Request, candidate: _Candidate) -> dict[str, Any]:
    return {
        "content_hash": request.record.content_hash,
        "model": candidate.completion.model,
        "adapter": candidate.adapter,
        "seed": candidate.seed,
        "support": candidate.quality[2],
        "dropped": len(candidate.draft.dropped),
        "novel_bigrams": round(candidate.novel, 4),
    }


def _self_examples(summarizer: Summarizer, request: Request, kept: list[_Candidate]) -> list[Example]:
    chat = as_chat(summarizer.chat(request))
    task, language = request.template.id, request.record.article.language
    return [
        example("self", task, language, articles_of(request), chat, c.target, _self_meta(request, c))
        for c in kept
    ]


def _self_pair(summarizer: Summarizer, request: Request, sampled: list[_Candidate]) -> list[PreferencePair]:
    """The best kept candidate against the worst rejected one, when both exist and differ."""
    kept = [c for c in sampled if c.rejected_for is None]
    rejected = [c for c in sampled if c.rejected_for is not None and c.written]
    if not kept or not rejected:
        return []
    best = max(kept, key=lambda c: (c.quality, -c.seed))
    worst = min(rejected, key=lambda c: (c.quality, c.seed))
    if best.target == worst.written:
        return []
    chat = as_chat(summarizer.chat(request))
    meta = {
        "content_hash": request.record.content_hash,
        "model": best.completion.model,
        "chosen": _self_meta(request, best),
        "rejected": {**_self_meta(request, worst), "reason": worst.rejected_for},
    }
    task, language = request.template.id, request.record.article.language
    return [pair("self", task, language, articles_of(request), chat, best.target, worst.written, meta)]


def _self_stats(
    stats: Counter[str], novel: list[float], examples: int, pairs: int, stopped: bool, start: float
) -> dict[str, Any]:
    sampled = stats["sampled"]
    return {
        "requests": stats["requests"],
        "sampled": sampled,
        "kept": examples,
        "kept_share": round(len(novel) / sampled, 4) if sampled else 0.0,
        "novel_bigrams": round(sum(novel) / len(novel), 4) if novel else 0.0,
        "pairs": pairs,
        "errors": stats["errors"],
        "rejected": {
            k.removeprefix("rejected_"): v for k, v in sorted(stats.items()) if k.startswith("rejected_")
        },
        "stopped_at_deadline": stopped,
        "seconds": round(time.monotonic() - start, 3),
    }
