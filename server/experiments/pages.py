"""The product team's pages: the experiments list with a form to define one, and each
experiment's results page (a table per metric, the sample-ratio banner, warnings, two charts).

Owns `ExperimentPages` at /product/experiments (product role; 403 for every other). The forms
post with the CSRF token that server.hardening checks and do what the API does (the store audits
every change); a refused definition or transition shows its reasons on the page (HTTP 400) with
the text kept. Numbers are formatted here, in the metric's unit, so the templates only place
strings; Jinja escapes every one of them, and the charts are SVG checked by charts.safe_svg.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from pydantic import Field

from server.auth import allow
from server.experiments.analysis import Effect
from server.experiments.charts import CountPoint, EffectPoint, effect_chart, exposure_chart
from server.experiments.model import (
    GUARDRAILS,
    METRICS,
    OUTCOMES,
    ExperimentInvalid,
    MetricSpec,
    prompt_kinds,
)
from server.experiments.results import ALPHA, Results, difference, p_value, results, value
from server.pages import Form
from server.schema import NoNul
from server.service import Actor, Service

MAX_DEFINITION = 20_000  # characters of JSON in the create form
EXAMPLE = {
    "key": "one-sentence-summaries",
    "hypothesis": "One-sentence summaries get more clicks per visit than the three-sentence ones.",
    "arms": [
        {"name": "control", "weight": 0.5},
        {"name": "one-sentence", "weight": 0.5, "article_prompt": "article-one-sentence"},
    ],
    "targeting": {"languages": [], "readers": "all", "traffic": 1.0},
    "primary": "clicks_per_visit",
    "secondary": ["ctr", "dwell_per_visit"],
    "guardrails": list(GUARDRAILS),
}


class DefinitionForm(Form):
    definition: Annotated[str, NoNul] = Field(min_length=1, max_length=MAX_DEFINITION)


class DecideForm(Form):
    arm: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _actor(request: Request[Any, Any, Any]) -> Actor:
    actor = request.user
    assert isinstance(actor, Actor)  # the guard let only a signed-in product person through
    return actor


class ExperimentPages(Controller):
    path = "/product/experiments"
    guards = (allow("product"),)
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def index(self, service: NamedDependency[Service]) -> Template:
        return _index(service, json.dumps(EXAMPLE, indent=2), [])

    @post("/", sync_to_thread=True)
    def create(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        data: URLEncodedBody[DefinitionForm],
    ) -> Template | Redirect:
        try:
            e = service.experiments.parse(_json_object(data.definition))
            service.experiments.create(_actor(request), e)
        except ExperimentInvalid as exc:
            return _index(service, data.definition, exc.reasons, status=HTTP_400_BAD_REQUEST)
        return Redirect(f"/product/experiments/{e.key}", status_code=303)

    @get("/{key:str}", sync_to_thread=True)
    def show(self, service: NamedDependency[Service], key: FromPath[str]) -> Template:
        return _results_page(service, key, [])

    @post("/{key:str}/start", sync_to_thread=True)
    def start(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        key: FromPath[str],
        data: URLEncodedBody[Form],
    ) -> Template | Redirect:
        return _change(service, key, lambda: service.experiments.start(_actor(request), key, service.clock()))

    @post("/{key:str}/stop", sync_to_thread=True)
    def stop(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        key: FromPath[str],
        data: URLEncodedBody[Form],
    ) -> Template | Redirect:
        return _change(service, key, lambda: service.experiments.stop(_actor(request), key, service.clock()))

    @post("/{key:str}/decide", sync_to_thread=True)
    def decide(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        key: FromPath[str],
        data: URLEncodedBody[DecideForm],
    ) -> Template | Redirect:
        actor = _actor(request)
        return _change(
            service, key, lambda: service.experiments.decide(actor, key, data.arm, service.clock())
        )


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExperimentInvalid(
            [f"definition: not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
        ) from None


def _change(service: Service, key: str, act: Any) -> Template | Redirect:
    """Do a lifecycle step; a refused one shows its reasons on the results page (HTTP 400)."""
    try:
        act()
    except ExperimentInvalid as exc:
        return _results_page(service, key, exc.reasons, status=HTTP_400_BAD_REQUEST)
    return Redirect(f"/product/experiments/{key}", status_code=303)


def _index(service: Service, definition: str, errors: list[str], status: int = 200) -> Template:
    context = {
        "experiments": service.experiments.list(),
        "metrics": METRICS,
        "outcomes": OUTCOMES,
        "guardrails": GUARDRAILS,
        "templates": sorted(r for r in prompt_kinds() if "@" not in r),
        "definition": definition,
        "errors": errors,
    }
    return Template("experiments_list.html", context=context, status_code=status)


def _results_page(service: Service, key: str, errors: list[str], status: int = 200) -> Template:
    checker = getattr(service.summarizer.checker, "name", None)
    r = results(service.experiments, key, service.clock(), checker=checker)
    context = {
        "r": r,
        "e": r.experiment,
        "tables": [_table(spec, role, effects, r) for spec, role, effects in r.metric_effects()],
        "charts": _charts(r),
        "errors": errors,
        "alpha": ALPHA,
    }
    return Template("experiments_results.html", context=context, status_code=status)


# What the page shows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    arm: str
    n: str
    means: str
    effect: str
    interval: str
    relative: str
    p: str
    p_adjusted: str
    chance: str
    cuped: str
    verdict: str  # "better", "worse" or "" (not significant after correction)
    warnings: tuple[str, ...]


def _table(spec: MetricSpec, role: str, effects: list[Effect], r: Results) -> dict[str, Any]:
    return {"spec": spec, "role": role, "rows": [_row(spec, e) for e in effects]}


def _row(spec: MetricSpec, e: Effect) -> Row:
    return Row(
        arm=e.arm,
        n=f"{e.n_control:,} / {e.n_arm:,}",
        means=f"{value(e.mean_control, spec.unit)} → {value(e.mean_arm, spec.unit)}",
        effect=difference(e.absolute, spec.unit),
        interval=f"[{difference(e.ci_low, spec.unit)}, {difference(e.ci_high, spec.unit)}]",
        relative=_relative(e),
        p=p_value(e.p_value),
        p_adjusted=p_value(e.p_adjusted) if e.p_adjusted is not None else "—",
        chance=f"{e.chance_to_win:.0%}" if e.chance_to_win is not None else "—",
        cuped=_cuped(e),
        verdict=verdict(e, spec),
        warnings=e.warnings,
    )


def verdict(e: Effect, spec: MetricSpec) -> str:
    """ "better" or "worse" where the interval excludes 0 and (outside guardrails) the
    Holm-adjusted p is below alpha; "" otherwise."""
    p = e.p_value if e.role == "guardrail" else e.p_adjusted
    if p is None or not math.isfinite(p) or p >= ALPHA or (not e.ci_low > 0 and not e.ci_high < 0):
        return ""
    up = e.ci_low > 0
    return "better" if up == spec.higher_is_better else "worse"


def _cuped(e: Effect) -> str:
    if not e.cuped or e.variance_reduction is None:
        return "not applied"
    return f"variance {-e.variance_reduction:+.0%}"  # the pre-period explained this much of it


def _relative(e: Effect) -> str:
    if e.relative is None:
        return "—"
    if e.rel_ci_low is None or e.rel_ci_high is None:
        return f"{e.relative:+.1%}"
    return f"{e.relative:+.1%} [{e.rel_ci_low:+.1%}, {e.rel_ci_high:+.1%}]"


def _charts(r: Results) -> dict[str, str]:
    """Inline SVG markup of both charts (empty before there is a day to draw)."""
    if not r.looks:
        return {}
    spec = METRICS[r.experiment.primary]
    effects = [
        EffectPoint(look.end, look.arm, look.effect, look.ci_low, look.ci_high)
        for look in r.looks
        if look.effect is not None and look.ci_low is not None and look.ci_high is not None
    ]
    counts = [CountPoint(look.end, look.arm, look.readers) for look in r.looks]
    title = f"Effect on {spec.label}" + (" (percentage points)" if spec.unit == "%" else "")
    out = {"exposures": exposure_chart(counts)}
    if effects:
        out["effect"] = effect_chart(effects, title=title, percent=spec.unit == "%")
    return out
