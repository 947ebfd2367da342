"""What an experiment is: its arms, targeting, metrics and lifecycle, and how one is read from JSON.

Owns the `Experiment` dataclasses, the metric registry `METRICS` (metrics are defined once here by
name; server/experiments/metrics.py computes them), `parse_experiment` (every problem of a
definition collected into one `ExperimentInvalid`, each reason naming its field), `to_json`, and
the pure status transitions (`started`, `stopped`, `decided`) the store applies.

An arm is a `briefing.Variant` (prompt templates, adapter, backend, items per briefing) with a
traffic weight; the first arm is the control. An arm's adapter must be one `known_adapters` names
(the service passes the adapter registry's candidates and promoted adapter).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal, cast, get_args

from briefing import ARM_POLICIES, PROMPTS, PromptRegistry, Variant
from briefing.llm import GENERATORS
from server.experiments.checks import Problems, State, finite, flag, show, slug, stored_state, unknown_fields

Status = Literal["draft", "running", "stopped", "decided"]
Readers = Literal["all", "new", "returning"]
STATUSES: tuple[Status, ...] = get_args(Status)
READERS: tuple[Readers, ...] = get_args(Readers)

MAX_ARMS = 8
MAX_ITEMS = 20  # items per briefing an arm may ask for
MAX_LANGUAGES = 20
MAX_HYPOTHESIS = 2000
WEIGHT_TOLERANCE = 1e-9

_KEY = re.compile(r"[a-z0-9][a-z0-9-]{2,59}")
_ARM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_LAYER = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True)
class MetricSpec:
    """A metric by name. `kind` "proportion": each reader's value is 0 or 1; "mean": any number.
    A guardrail protects the product (it may block a launch) and is never the primary metric."""

    name: str
    label: str
    kind: Literal["mean", "proportion"]
    higher_is_better: bool
    guardrail: bool
    unit: str = ""  # for display: "%" (a share, shown as percent), "s", "ms" or "" (a count)
    description: str = ""


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec("clicks_per_visit", "Clicks per visit", "mean", True, False, "",
                   "briefing item clicks / visits, per reader"),
        MetricSpec("ctr", "Item click-through", "mean", True, False, "%",
                   "briefing item clicks / items shown, per reader"),
        MetricSpec("reads_per_visit", "Reads per visit", "mean", True, False, "",
                   "article reads / visits, per reader"),
        MetricSpec("dwell_per_visit", "Dwell per visit", "mean", True, False, "s",
                   "seconds read / visits, per reader"),
        MetricSpec("thumbs_up_share", "Thumbs up share", "mean", True, False, "%",
                   "thumbs up / (up + down), readers with any thumbs"),
        MetricSpec("return_7d", "Returned within 7 days", "proportion", True, False, "%",
                   "came back within 7 days of first exposure"),
        MetricSpec("fallback_share", "Extractive fallback share", "mean", False, True, "%",
                   "share of served items that fell back to the article's own words"),
        MetricSpec("rejection_rate", "Editor rejection rate", "mean", False, True, "%",
                   "share of the arm's drafts that editors rejected"),
        MetricSpec("latency_ms", "Briefing latency", "mean", False, True, "ms",
                   "time to compose and serve a briefing"),
    )
}  # fmt: skip
GUARDRAILS: tuple[str, ...] = tuple(m.name for m in METRICS.values() if m.guardrail)
OUTCOMES: tuple[str, ...] = tuple(m.name for m in METRICS.values() if not m.guardrail)


@dataclass(frozen=True)
class Arm:
    name: str
    variant: Variant  # variant.name == name
    weight: float


@dataclass(frozen=True)
class Targeting:
    """Who may enter: readers of these languages (empty: any), new or returning readers, and the
    share of the layer's traffic the experiment takes."""

    languages: tuple[str, ...] = ()
    readers: Readers = "all"
    traffic: float = 1.0


@dataclass(frozen=True)
class Experiment:
    key: str
    hypothesis: str
    arms: tuple[Arm, ...]  # the first arm is the control
    targeting: Targeting
    primary: str
    secondary: tuple[str, ...] = ()
    guardrails: tuple[str, ...] = GUARDRAILS
    layer: str = "briefing"  # experiments running in one layer never share a reader
    status: Status = "draft"
    start: datetime | None = None
    stop: datetime | None = None
    sequential: bool = True  # always-valid intervals, so results may be read every day
    decision: str | None = None  # the arm chosen, once decided
    range_start: float | None = None  # its slice of the layer [range_start, + traffic), set at start

    @property
    def control(self) -> Arm:
        return self.arms[0]

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"experiment {self.key!r} has no arm {name!r}; arms: {[a.name for a in self.arms]}")

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the results page shows: primary, secondary, then guardrails."""
        return (self.primary, *self.secondary, *self.guardrails)


class ExperimentInvalid(ValueError):
    """A definition or a change that is refused; `reasons` lists every problem found."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def prompt_kinds(registry: PromptRegistry = PROMPTS) -> dict[str, str]:
    """Every way an arm may name a template (`name` and `name@version`) and the template's kind."""
    kinds: dict[str, str] = {}
    for ref in registry.names():
        template = registry.get(ref)
        kinds[template.id] = kinds[template.name] = template.kind
    return kinds


@dataclass(frozen=True)
class _Known:
    prompts: Mapping[str, str] | Collection[str]
    adapters: Collection[str]
    backends: Collection[str]


_DEFINITION_FIELDS = tuple(
    "key hypothesis arms targeting primary secondary guardrails layer sequential".split()
)
_LIFECYCLE_FIELDS = ("status", "start", "stop", "decision", "range_start")
_ARM_FIELDS = tuple(
    "name weight article_prompt update_prompt greeting_prompt adapter backend items policy".split()
)
_PROMPT_FIELDS = (("article_prompt", "article"), ("update_prompt", "update"), ("greeting_prompt", "greeting"))
_TARGETING_FIELDS = ("languages", "readers", "traffic")
_VARIANT_DEFAULTS = {f.name: f.default for f in fields(Variant)}


def parse_experiment(
    data: Mapping[str, Any],
    *,
    known_prompts: Mapping[str, str] | Collection[str] | None = None,
    known_adapters: Collection[str] = frozenset(),
    known_backends: Collection[str] | None = None,
    lifecycle: bool = False,
) -> Experiment:
    """An experiment from its JSON definition, or `ExperimentInvalid` with every reason.

    `known_prompts`: template refs, or refs mapped to their kind (then an article prompt must be
    an article template); default: briefing.PROMPTS. `known_backends`: default the Generator
    registry. Status, dates, decision and range are set by the lifecycle, so a definition that
    carries them is refused unless `lifecycle` (reading back a stored experiment)."""
    if not isinstance(data, Mapping):
        raise ExperimentInvalid([f"experiment: expected an object, got {type(data).__name__}"])
    known = _Known(
        prompt_kinds() if known_prompts is None else known_prompts,
        known_adapters,
        frozenset(GENERATORS) if known_backends is None else known_backends,
    )
    p = Problems()
    unknown_fields(data, _DEFINITION_FIELDS + _LIFECYCLE_FIELDS, "experiment", p, _DEFINITION_FIELDS)
    if not lifecycle:
        for name in _LIFECYCLE_FIELDS:
            if name in data:
                p.add(name, "is set by start, stop and decide, not in a definition")
    key = slug(data, "key", _KEY, "3 to 60 of a-z, 0-9 and '-', starting with a letter or digit", p)
    hypothesis = _hypothesis(data.get("hypothesis"), p)
    arms = _arms(data.get("arms"), known, p)
    targeting = _targeting(data.get("targeting", {}), p)
    primary, secondary, guardrails = _metric_choice(data, p)
    layer = slug(data, "layer", _LAYER, "1 to 40 of a-z, 0-9 and '-'", p, default="briefing")
    if layer == "holdout":  # its hash would be the long-term holdout's (server/experiments/assign.py)
        p.add("layer", "'holdout' is reserved for the long-term holdout")
    sequential = flag(data, "sequential", True, p)
    names = {a.name for a in arms}
    state = stored_state(data, STATUSES, names, targeting.traffic, p) if lifecycle else State()
    if p.reasons:
        raise ExperimentInvalid(p.reasons)
    e = Experiment(key or "", hypothesis, arms, targeting, primary, secondary, guardrails, layer or "")
    return replace(e, sequential=sequential, **asdict(state))  # status is one of STATUSES: checked


def _hypothesis(value: object, p: Problems) -> str:
    if not isinstance(value, str) or not value.strip():
        p.add("hypothesis", "required: say what you expect to change and why")
        return ""
    if len(value) > MAX_HYPOTHESIS:
        p.add("hypothesis", f"at most {MAX_HYPOTHESIS} characters, got {len(value)}")
    return value.strip()


def _arms(raw: object, known: _Known, p: Problems) -> tuple[Arm, ...]:
    if raw is None:
        p.add("arms", "required: at least 2 arms, the first is the control")
        return ()
    if not isinstance(raw, list | tuple):
        p.add("arms", f"expected a list of arms, got {type(raw).__name__}")
        return ()
    if len(raw) > MAX_ARMS:
        p.add("arms", f"at most {MAX_ARMS} arms, got {len(raw)}")
        return ()
    if len(raw) < 2:
        p.add("arms", f"needs at least 2 arms (the first is the control), got {len(raw)}")
    arms = [_arm(i, item, known, p) for i, item in enumerate(raw)]
    fields_of = [item if isinstance(item, Mapping) else {} for item in raw]
    _duplicate_names([f.get("name") for f in fields_of], p)
    weights = [finite(f.get("weight")) for f in fields_of]
    if weights and all(w is not None and 0 < w <= 1 for w in weights):  # else each bad one is named
        total = math.fsum(w for w in weights if w is not None)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            p.add("arms[].weight", f"weights sum to {total:.10g}, not 1")
    return tuple(a for a in arms if a is not None)


def _duplicate_names(names: list[object], p: Problems) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if isinstance(name, str) and name in first:
            p.add(f"arms[{i}].name", f"{name!r} is already the name of arms[{first[name]}]")
        elif isinstance(name, str):
            first[name] = i


def _arm(i: int, raw: object, known: _Known, p: Problems) -> Arm | None:
    where = f"arms[{i}]"
    if not isinstance(raw, Mapping):
        p.add(where, f"expected an object with name and weight, got {type(raw).__name__}")
        return None
    before = len(p.reasons)
    unknown_fields(raw, _ARM_FIELDS, where, p)
    name = slug(raw, "name", _ARM_NAME, "1 to 40 of a-z, 0-9, '-' and '_'", p, where=where)
    weight = _weight(raw.get("weight"), f"{where}.weight", p)
    prompts = {
        f: _prompt(raw.get(f, _VARIANT_DEFAULTS[f]), kind, known, f"{where}.{f}", p)
        for f, kind in _PROMPT_FIELDS
    }
    adapter = _named(raw.get("adapter"), known.adapters, "adapter", f"{where}.adapter", p)
    backend = _named(raw.get("backend"), known.backends, "backend", f"{where}.backend", p)
    items = _items(raw.get("items"), f"{where}.items", p)
    chosen = raw.get("policy")
    policy = "gated" if chosen is None else _named(chosen, ARM_POLICIES, "policy", f"{where}.policy", p)
    if len(p.reasons) > before or name is None or policy is None:
        return None
    article, update, greeting = (prompts[f] for f, _ in _PROMPT_FIELDS)
    return Arm(name, Variant(name, article, update, greeting, adapter, backend, items, policy), weight)


def _weight(value: object, where: str, p: Problems) -> float:
    number = finite(value)
    if number is None:
        p.add(where, f"expected a number between 0 and 1, got {show(value)}")
        return 0.0
    if not 0.0 < number <= 1.0:
        p.add(where, f"must be above 0 and at most 1, got {number:g}")
    return number


def _prompt(value: object, kind: str, known: _Known, where: str, p: Problems) -> str:
    if not isinstance(value, str) or value not in known.prompts:
        names = sorted(r for r in known.prompts if "@" not in r and _kind(known, r) in (kind, None))
        p.add(where, f"unknown {kind} template {show(value)}; known: {', '.join(names)}")
        return ""
    found = _kind(known, value)
    if found is not None and found != kind:
        p.add(where, f"{value!r} is a template of kind {found!r}; this field takes kind {kind!r}")
    return value


def _kind(known: _Known, ref: str) -> str | None:
    prompts = known.prompts
    return prompts.get(ref) if isinstance(prompts, Mapping) else None


def _named(value: object, known: Collection[str], what: str, where: str, p: Problems) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in known:
        choices = f"known: {', '.join(sorted(known))}" if known else f"no {what}s are registered yet"
        p.add(where, f"unknown {what} {show(value)}; {choices}")
        return None
    return value


def _items(value: object, where: str, p: Problems) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ITEMS:
        p.add(where, f"expected a whole number of items from 1 to {MAX_ITEMS}, got {show(value)}")
        return None
    return value


def _targeting(raw: object, p: Problems) -> Targeting:
    if not isinstance(raw, Mapping):
        p.add(
            "targeting", f"expected an object with {', '.join(_TARGETING_FIELDS)}, got {type(raw).__name__}"
        )
        return Targeting()
    unknown_fields(raw, _TARGETING_FIELDS, "targeting", p)
    readers = raw.get("readers", "all")
    if readers not in READERS:
        p.add("targeting.readers", f"expected one of {', '.join(READERS)}, got {show(readers)}")
        readers = "all"
    traffic = finite(raw.get("traffic", 1.0))
    if traffic is None or not 0.0 < traffic <= 1.0:
        p.add(
            "targeting.traffic", f"a share of traffic above 0 and at most 1, got {show(raw.get('traffic'))}"
        )
        traffic = 1.0
    return Targeting(_languages(raw.get("languages", []), p), cast(Readers, readers), traffic)


def _languages(raw: object, p: Problems) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or len(raw) > MAX_LANGUAGES:
        p.add(
            "targeting.languages", f"expected a list of at most {MAX_LANGUAGES} language codes ('en', 'nb')"
        )
        return ()
    for i, code in enumerate(raw):
        if not isinstance(code, str) or not _LANGUAGE.fullmatch(code):
            p.add(f"targeting.languages[{i}]", f"{show(code)} is not a language code like 'en' or 'nb'")
    return tuple(dict.fromkeys(c for c in raw if isinstance(c, str) and _LANGUAGE.fullmatch(c)))


def _metric_choice(data: Mapping[str, Any], p: Problems) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    primary = data.get("primary")
    if primary is None:
        p.add("primary", f"required; one of {', '.join(OUTCOMES)}")
    else:
        _metric(primary, False, "primary", p)
    secondary = _metric_list(data.get("secondary", []), False, "secondary", p)
    if primary in secondary:
        p.add("secondary", f"{primary!r} is already the primary metric")
    guardrails = _metric_list(data.get("guardrails", list(GUARDRAILS)), True, "guardrails", p)
    return (primary if isinstance(primary, str) else ""), secondary, guardrails


def _metric(name: object, guardrail: bool, where: str, p: Problems) -> bool:
    spec = METRICS.get(name) if isinstance(name, str) else None
    allowed = GUARDRAILS if guardrail else OUTCOMES
    if spec is None:
        p.add(where, f"unknown metric {show(name)}; choose from {', '.join(allowed)}")
    elif spec.guardrail and not guardrail:
        p.add(where, f"{name!r} is a guardrail metric; list it under guardrails")
    elif guardrail and not spec.guardrail:
        p.add(where, f"{name!r} is not a guardrail metric; guardrails are {', '.join(GUARDRAILS)}")
    return spec is not None and spec.guardrail == guardrail


def _metric_list(raw: object, guardrail: bool, where: str, p: Problems) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or len(raw) > len(METRICS):
        p.add(where, f"expected a list of at most {len(METRICS)} metric names")
        return ()
    names: list[str] = []
    for i, name in enumerate(raw):
        if _metric(name, guardrail, f"{where}[{i}]", p) and isinstance(name, str):
            if name in names:
                p.add(f"{where}[{i}]", f"{name!r} is listed twice")
            names.append(name)
    return tuple(dict.fromkeys(names))


def started(e: Experiment, range_start: float, now: datetime) -> Experiment:
    """`e` running from `now` in its slice of the layer (server/experiments/assign.allocate)."""
    if e.status != "draft":
        raise ExperimentInvalid([f"status: {e.key} is {e.status}; only a draft can start"])
    return replace(e, status="running", start=now, range_start=range_start)


def stopped(e: Experiment, now: datetime) -> Experiment:
    """`e` no longer assigns anyone: its readers get the default briefing (the control's)."""
    if e.status != "running":
        raise ExperimentInvalid([f"status: {e.key} is {e.status}; only a running experiment can stop"])
    return replace(e, status="stopped", stop=now)


def decided(e: Experiment, arm: str, now: datetime) -> Experiment:
    """`e` with its chosen arm; a running experiment stops at the decision."""
    if e.status not in ("running", "stopped"):
        raise ExperimentInvalid(
            [f"status: {e.key} is {e.status}; only a running or stopped one can be decided"]
        )
    if arm not in {a.name for a in e.arms}:
        raise ExperimentInvalid([f"decision: {show(arm)} is not one of {', '.join(a.name for a in e.arms)}"])
    return replace(e, status="decided", stop=e.stop or now, decision=arm)


def to_json(e: Experiment) -> dict[str, Any]:
    """The definition and state as JSON; `parse_experiment(to_json(e), lifecycle=True) == e`."""
    return {
        "key": e.key,
        "hypothesis": e.hypothesis,
        "arms": [_arm_json(a) for a in e.arms],
        "targeting": {**asdict(e.targeting), "languages": list(e.targeting.languages)},
        "primary": e.primary,
        "secondary": list(e.secondary),
        "guardrails": list(e.guardrails),
        "layer": e.layer,
        "sequential": e.sequential,
        "status": e.status,
        "start": e.start.isoformat() if e.start else None,
        "stop": e.stop.isoformat() if e.stop else None,
        "decision": e.decision,
        "range_start": e.range_start,
    }


def _arm_json(arm: Arm) -> dict[str, Any]:
    return {
        "name": arm.name,
        "weight": arm.weight,
        **{k: v for k, v in asdict(arm.variant).items() if k != "name"},
    }
