"""Where fine-tuning rows come from: editor decisions, grounded self-training, checked references.

Every row's chat is the exact prompt the serving path renders (`Summarizer.chat`) for the article
version the text was written from, and every target is in the form its template asks for (bullet
points "- ..." one per line, or one plain sentence), so the model learns the task it is served.
- `editor_rows`: approved and edited summaries are targets; an edit is also a preference of the
  edited over the generated text; a rejected text is a dispreferred answer next to an approved or
  edited one for the same article version and template.
- `briefing.tuning.self_training`: the model's own sampled candidates that the grounding check
  passes with a margin and that say more than a copy of the article's words; best against worst as pairs.
- `reference_rows`: public reference summaries cut to the sentences the checker supports
  (references often state facts absent from the article: learning them teaches invention).
Only generated (non-extractive) sentences become targets: the article's own lead, quoted by the
fallback or as a correction note, is not the model's to write.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from briefing.grounding import EmbeddingLexicalChecker, Evidence, GroundingChecker, Support, split_sentences
from briefing.prompts import PromptTemplate
from briefing.summaries import REVIEWED, Status, Summary, SummarySentence, summary_id
from briefing.summarize import Followed, Request, Summarizer
from briefing.tuning.data import Example, PreferencePair, as_chat, example, pair

_WORDS = re.compile(r"\w+")


def novel_bigrams(text: str, source: str) -> float:
    """The share of the text's word bigrams (case-folded, each occurrence counted) absent from
    `source`; 0.0 for a text of fewer than two words (it adds no new pair of words)."""
    pairs = _bigrams(text)
    if not pairs:
        return 0.0
    known = set(_bigrams(source))
    return sum(p not in known for p in pairs) / len(pairs)


def _bigrams(text: str) -> list[tuple[str, str]]:
    words = _WORDS.findall(text.casefold())
    return list(itertools.pairwise(words))


def formatted(sentences: Sequence[str], template: PromptTemplate) -> str:
    """Sentences as the template asks for them: "- " bullets one per line when it asks for
    several, else one plain line."""
    if template.max_sentences > 1:
        return "\n".join(f"- {s}" for s in sentences)
    return " ".join(sentences)


def source_text(request: Request) -> str:
    """The article text the prompt holds (its evidence), else its title, lead and body."""
    article = request.record.article
    own = "\n\n".join(c.text for c in request.evidence)
    return own or "\n\n".join(p for p in (article.title, article.lead or "", article.body) if p)


def articles_of(request: Request) -> tuple[str, ...]:
    """Every article the prompt was written from: the summarized one first, then each development
    and each article already read (their titles are in an update's prompt)."""
    devs = [d.id for d in request.developments]
    read = [b.article.id for b in request.basis]
    return tuple(dict.fromkeys([request.record.article.id, *devs, *read]))


# --- editor decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decided:
    """A decided summary with its rebuilt request."""

    summary: Summary
    request: Request

    @property
    def key(self) -> tuple[str, str, str, tuple[str, ...]]:
        s = self.summary
        return (s.article_id, s.content_hash, s.prompt, s.basis)


def editor_rows(
    summaries: Iterable[Summary], summarizer: Summarizer
) -> tuple[list[Example], list[PreferencePair], dict[str, int]]:
    """Rows from editors' decisions (see the module docstring). A summary is skipped, and counted
    by reason, when its article is gone or changed since ("stale_version"), its template is no
    longer registered ("prompt_unavailable"), an update's prompt cannot be rebuilt from its stored
    basis ("update_not_rebuilt"), it holds no generated sentence ("extractive_only"), it is not
    decided ("undecided": drafts, retracted), or it is a rejection with no approved or edited text
    of the same article version and template to pair with ("rejected_unpaired")."""
    stats: Counter[str] = Counter()
    decided: list[_Decided] = []
    for summary in sorted(summaries, key=lambda s: s.id):
        stats[summary.status.value] += 1
        if summary.status not in (*REVIEWED, Status.REJECTED):
            stats["undecided"] += 1
            continue
        request, reason = _rebuilt(summary, summarizer)
        if request is None:
            stats[reason] += 1
        else:
            decided.append(_Decided(summary, request))
    examples, pairs = _reviewed_rows(decided, summarizer, stats)
    pairs += _rejected_pairs(decided, summarizer, stats)
    keys = ("approved", "edited", "rejected", "stale_version", "update_not_rebuilt", "rejected_unpaired")
    return examples, pairs, {**dict.fromkeys(keys, 0), **stats}


def _reviewed_rows(
    decided: list[_Decided], summarizer: Summarizer, stats: Counter[str]
) -> tuple[list[Example], list[PreferencePair]]:
    examples: list[Example] = []
    pairs: list[PreferencePair] = []
    for item in (d for d in decided if d.summary.status in REVIEWED):
        target = _target(item.summary, item.request.template)
        if not target:
            stats["extractive_only"] += 1
            continue
        examples.append(_row(item, summarizer, target))
        original = item.summary.original_text
        if item.summary.status is Status.EDITED and original and original.strip() != item.summary.text:
            rejected = formatted(split_sentences(original), item.request.template)
            pairs.append(_pair_row(item, summarizer, target, rejected))
    return examples, pairs


def _rejected_pairs(
    decided: list[_Decided], summarizer: Summarizer, stats: Counter[str]
) -> list[PreferencePair]:
    """A rejected text against the first reviewed text (by id) of the same article version,
    template and basis: the model that wrote it does not matter, the prompt does."""
    chosen: dict[tuple[str, str, str, tuple[str, ...]], str] = {}
    for item in decided:
        target = _target(item.summary, item.request.template) if item.summary.status in REVIEWED else ""
        if target:
            chosen.setdefault(item.key, target)
    pairs: list[PreferencePair] = []
    for item in (d for d in decided if d.summary.status is Status.REJECTED):
        rejected = formatted([s.text for s in item.summary.sentences], item.request.template)
        better = chosen.get(item.key)
        if better is None or better == rejected:
            stats["rejected_unpaired"] += 1
        else:
            pairs.append(_pair_row(item, summarizer, better, rejected))
    return pairs


def _target(summary: Summary, template: PromptTemplate) -> str:
    return formatted([s.text for s in summary.sentences if not s.extractive], template)


def _provenance(summary: Summary) -> dict[str, Any]:
    return {
        "summary_id": summary.id,
        "content_hash": summary.content_hash,
        "model": summary.model,
        "adapter": summary.adapter,
        "status": summary.status.value,
        "reviewer": summary.reviewed_by,
        "reviewed_at": summary.reviewed_at.isoformat() if summary.reviewed_at else None,
        "support": _min_support(summary.sentences),
        "reason": summary.reason,
    }


def _row(item: _Decided, summarizer: Summarizer, target: str) -> Example:
    request = item.request
    chat = as_chat(summarizer.chat(request))
    language = request.record.article.language
    return example(
        "editor", request.template.id, language, articles_of(request), chat, target, _provenance(item.summary)
    )


def _pair_row(item: _Decided, summarizer: Summarizer, chosen: str, rejected: str) -> PreferencePair:
    request = item.request
    chat = as_chat(summarizer.chat(request))
    language, meta = request.record.article.language, _provenance(item.summary)
    return pair("editor", request.template.id, language, articles_of(request), chat, chosen, rejected, meta)


def _rebuilt(summary: Summary, summarizer: Summarizer) -> tuple[Request | None, str]:
    """The request the summary was written from, with its evidence, or None and why not."""
    try:
        summarizer.prompts.get(summary.prompt)
    except KeyError:
        return None, "prompt_unavailable"
    if summary.kind == "update":
        return _rebuilt_update(summary, summarizer)
    found = summarizer.article_requests([summary.article_id], summary.prompt)
    if not found or found[0].record.content_hash != summary.content_hash:
        return None, "stale_version"
    if found[0].template.id != summary.prompt:  # the article's language changed its template
        return None, "prompt_unavailable"
    return found[0], ""


def _rebuilt_update(summary: Summary, summarizer: Summarizer) -> tuple[Request | None, str]:
    """A stored update names its basis as the articles read, then the earlier developments it
    covered, without the boundary: each boundary is tried until the rebuilt request names the
    same summary (same read articles, same version of every development)."""
    records = summarizer.retriever.index.get([summary.article_id])
    record = records.get(summary.article_id)
    if record is None or record.content_hash != summary.content_hash:
        return None, "stale_version"
    for read in _prefixes(summary.basis):
        request = summarizer.update_request(summary.article_id, Followed(read), summary.prompt)
        if request is not None and _names(request, summary, summarizer):
            return summarizer.with_evidence(request), ""
    return None, "update_not_rebuilt"


def _prefixes(basis: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for n in range(len(basis), -1, -1):
        yield basis[:n]


def _names(request: Request, summary: Summary, summarizer: Summarizer) -> bool:
    """Whether `request` is the one `summary` was written from (the id `Summarizer.summary_id`
    gives, with the model and adapter that wrote the summary)."""
    read = tuple(b.article.id for b in request.basis)
    covered = tuple(f"{d.id}@{d.record.content_hash}" for d in request.developments)
    record = request.record
    # the id names the generator's model, which `Summary.model` matches unless a fallback wrote it
    models = dict.fromkeys([summarizer.generator.model, summary.model])
    ids = {
        summary_id(
            record.article.id, record.content_hash, request.template.id, m, summary.adapter, (*read, *covered)
        )
        for m in models
    }
    return summary.id in ids and request.template.id == summary.prompt


def _min_support(sentences: Iterable[SummarySentence]) -> float | None:
    scores = [s.score for s in sentences if not s.extractive]
    return round(min(scores), 4) if scores else None


# --- public references ------------------------------------------------------------------------


def reference_rows(
    pairs: Iterable[tuple[Request, str]], summarizer: Summarizer, *, threshold: float, margin: float = 0.0
) -> tuple[list[Example], dict[str, int]]:
    """Rows from public reference summaries (XSum, NorSumm) of articles in the summarizer's index:
    each reference cut to the sentences the checker (`summarizer.checker`) supports with at least
    `threshold + margin` and nothing missing (no number, name or quote absent from the article);
    a reference left with none is dropped. Stats: rows, kept, dropped, sentences, kept_sentences."""
    examples: list[Example] = []
    stats: Counter[str] = Counter()
    for request, reference in pairs:
        stats["rows"] += 1
        sentences = split_sentences(reference)
        evidence = [c.evidence() for c in request.evidence]
        supports = _checked(summarizer.checker, sentences, evidence, threshold + margin)
        kept = [s for s in supports if not s.missing and s.score >= threshold + margin]
        stats["sentences"] += len(sentences)
        stats["kept_sentences"] += len(kept)
        if not kept:
            stats["dropped"] += 1
            continue
        stats["kept"] += 1
        meta = {
            "content_hash": request.record.content_hash,
            "reference": reference,
            "support": round(min(s.score for s in kept), 4),
            "dropped_sentences": [s.sentence for s in supports if s not in kept],
        }
        target = formatted([s.sentence for s in kept], request.template)
        chat = as_chat(summarizer.chat(request))
        task, language = request.template.id, request.record.article.language
        examples.append(example("reference", task, language, articles_of(request), chat, target, meta))
    return examples, {k: stats[k] for k in ("rows", "kept", "dropped", "sentences", "kept_sentences")}


def _checked(
    checker: GroundingChecker, sentences: list[str], evidence: list[Evidence], bar: float
) -> list[Support]:
    if not (sentences and evidence):
        return []
    if isinstance(checker, EmbeddingLexicalChecker):  # only whether each reaches `bar` matters here
        return checker.check(sentences, evidence, bar=bar)
    return checker.check(sentences, evidence)
