"""The results page's charts, drawn on the server as SVG (altair specs rendered by vl-convert).

Owns two charts, the effect of each arm on the primary metric with its interval over time and the
cumulative readers exposed per arm, and `svg`, which renders a chart and checks the result before
a page inlines it. The page carries no script and loads nothing from a CDN: vl-convert runs Vega
in-process and returns markup. Arm names come from the people who define experiments, so they
are data to the chart: Vega writes every label as escaped SVG text, and `safe_svg` refuses any
element or attribute outside the small set plain charts use (no script, no event handler, no
foreign object, no link leaving the document), should a future renderer emit one.

Heavy imports (altair, vl_convert) are inside the functions: the CLI and the server start
without them, and the first chart of a process pays about two seconds to start Vega.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import altair as alt

WIDTH, HEIGHT = 560, 220
_SVG = "{http://www.w3.org/2000/svg}"
_XLINK = "{http://www.w3.org/1999/xlink}"
# What Vega's SVG renderer writes for line, area, rule and point marks with axes and legends.
ALLOWED_ELEMENTS = frozenset(
    {"svg", "g", "path", "rect", "line", "text", "tspan", "circle", "defs", "clipPath", "title", "desc"}
)


class UnsafeSvg(ValueError):
    """Rendered markup with something a page must not inline."""


@dataclass(frozen=True)
class EffectPoint:
    """An arm's effect against the control as of the end of one day (absolute, metric units)."""

    day: datetime
    arm: str
    effect: float
    low: float
    high: float


@dataclass(frozen=True)
class CountPoint:
    """Readers exposed to an arm up to the end of one day."""

    day: datetime
    arm: str
    readers: int


def effect_chart(points: Sequence[EffectPoint], *, title: str, percent: bool = False) -> str:
    """SVG: per arm, its effect line and interval band over the days, and the zero line (no
    difference). `percent`: the metric is a share, so the axis reads in percentage points."""
    import altair as alt

    rows = [
        {"day": p.day.isoformat(), "arm": p.arm, "effect": p.effect, "low": p.low, "high": p.high}
        for p in points
        if all(math.isfinite(v) for v in (p.effect, p.low, p.high))  # Vega's JSON has no NaN
    ]
    axis = alt.Axis(format="+.1%" if percent else "+~g", title=title)
    base = alt.Chart(_inline(rows)).encode(x=_day_axis(), color=_arm_colour())
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", axis=axis), y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("effect:Q", axis=axis),
        tooltip=["arm:N", "effect:Q", "low:Q", "high:Q"],
    )
    zero = alt.Chart(_inline([{"zero": 0}])).mark_rule(color="#666", strokeDash=[4, 3]).encode(y="zero:Q")
    return svg(alt.layer(band, line, zero).properties(width=WIDTH, height=HEIGHT))


def exposure_chart(points: Sequence[CountPoint]) -> str:
    """SVG: cumulative readers exposed per arm by day (arms in their weights' ratio, unless
    assignment or logging is broken)."""
    import altair as alt

    rows = [{"day": p.day.isoformat(), "arm": p.arm, "readers": p.readers} for p in points]
    chart = (
        alt.Chart(_inline(rows))
        .mark_line(point=True)
        .encode(
            x=_day_axis(),
            y=alt.Y("readers:Q", title="Readers exposed (cumulative)", axis=alt.Axis(format="~s")),
            color=_arm_colour(),
        )
    )
    return svg(chart.properties(width=WIDTH, height=HEIGHT))


def _inline(rows: list[dict[str, Any]]) -> Any:
    """Rows inlined in the spec (a dict: altair's `Data` constructor is untyped)."""
    return {"values": rows}


def _day_axis() -> Any:
    import altair as alt

    # UTC throughout (the days are the experiment's, from its start); a tick at most once a day
    axis = alt.Axis(format="%d %b", labelAngle=0, tickMinStep=86_400_000)
    return alt.X("day:T", title="End of day (UTC)", scale=alt.Scale(type="utc"), axis=axis)


def _arm_colour() -> Any:
    import altair as alt

    return alt.Color("arm:N", title="Arm", scale=alt.Scale(scheme="tableau10"))


def svg(chart: alt.TopLevelMixin) -> str:
    """The chart as standalone SVG markup, checked by `safe_svg`."""
    import vl_convert

    return safe_svg(vl_convert.vegalite_to_svg(chart.to_json()))


def safe_svg(markup: str) -> str:
    """`markup` if it is well-formed SVG of `ALLOWED_ELEMENTS` with no event handler, style
    element or link out of the document; `UnsafeSvg` otherwise."""
    try:
        root = ET.fromstring(markup)
    except ET.ParseError as exc:
        raise UnsafeSvg(f"not well-formed SVG: {exc}") from None
    if root.tag != f"{_SVG}svg":
        raise UnsafeSvg(f"the root element is {root.tag!r}, not svg")
    for element in root.iter():
        _check(element)
    return markup


def _check(element: ET.Element) -> None:
    tag = element.tag.removeprefix(_SVG)
    if tag not in ALLOWED_ELEMENTS:
        raise UnsafeSvg(f"element {element.tag!r} is not one a chart needs")
    for name, value in element.attrib.items():
        local = name.removeprefix(_XLINK).lower()
        if local.startswith("on"):
            raise UnsafeSvg(f"event handler attribute {name!r}")
        if local == "href" and not value.startswith("#"):
            raise UnsafeSvg(f"a link out of the document: {value[:40]!r}")
        lowered = value.lower()
        if "javascript:" in lowered or ("url(" in lowered and "url(#" not in lowered):
            raise UnsafeSvg(f"attribute {name!r} reaches outside the document")
