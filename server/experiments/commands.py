"""`briefing experiments`: define, start, stop and decide experiments and print their results.

Owns the click group that server/cli.py adds to `briefing`. Like `briefing readers import`, the
commands work on the service's database (DATABASE_URL) directly, through the same store the API
uses, so every change is audited, as the operator ($USER) in the product role; a server running
on that database sees a start or stop within the store's refresh time. `results` computes what
GET /v1/experiments/KEY/results answers (text, --json or --csv). Times follow the service's clock
(CLOCK_START in a demo). Imports beyond click are inside the commands: `briefing --help` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from server.experiments.model import Experiment
    from server.experiments.results import Results
    from server.experiments.store import Experiments
    from server.service import Actor
    from server.settings import Settings


@click.group()
def experiments() -> None:
    """Experiments on briefing variants (as the product role): define, start, stop, decide, results."""


@contextmanager
def _store() -> Iterator[tuple[Experiments, Settings]]:
    """The experiments store on DATABASE_URL; refusals and unknown keys as one-line errors."""
    from server.container import build_engine
    from server.experiments.model import ExperimentInvalid
    from server.experiments.store import Experiments
    from server.service import NotFound
    from server.settings import Settings

    settings = Settings.from_env()
    engine = build_engine(settings)
    try:
        yield Experiments(engine), settings
    except ExperimentInvalid as exc:
        raise click.ClickException("refused:\n  " + "\n  ".join(exc.reasons)) from exc
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()


def _actor() -> Actor:
    from server.service import Actor

    return Actor(os.environ.get("USER") or "cli", "product")


def _now(settings: Settings) -> datetime:
    from server.container import build_clock

    return build_clock(settings)()


def _echo(e: Experiment) -> None:
    since = f" since {e.start:%Y-%m-%d %H:%M} UTC" if e.start else ""
    decision = f", decided: {e.decision}" if e.decision else ""
    arms = ", ".join(f"{a.name} {a.weight:.0%}" for a in e.arms)
    click.echo(f"{e.key}: {e.status}{since}{decision} (arms {arms}; primary {e.primary})")


@experiments.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def create(file: Path) -> None:
    """Define an experiment from FILE, JSON as POST /v1/experiments takes it; a draft until started.
    A refused definition prints every reason and stores nothing."""

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{file} is not JSON: {exc}") from exc
    with _store() as (store, _):
        _echo(store.create(_actor(), store.parse(data)))


def _step(act: Callable[[Experiments, Actor, datetime], Experiment]) -> None:
    with _store() as (store, settings):
        _echo(act(store, _actor(), _now(settings)))


@experiments.command("list")
def list_experiments() -> None:
    """Every experiment with its status."""
    with _store() as (store, _):
        for e in store.list():
            _echo(e)


@experiments.command("start")
@click.argument("key")
def start(key: str) -> None:
    """Start the draft KEY now (refused if its layer has no room left)."""
    _step(lambda store, actor, now: store.start(actor, key, now))


@experiments.command("stop")
@click.argument("key")
def stop(key: str) -> None:
    """Stop KEY now: its readers get the default briefing from then on."""
    _step(lambda store, actor, now: store.stop(actor, key, now))


@experiments.command("decide")
@click.argument("key")
@click.argument("arm")
def decide(key: str, arm: str) -> None:
    """Record ARM as KEY's decision (a running experiment stops)."""
    _step(lambda store, actor, now: store.decide(actor, key, arm, now))


@experiments.command("results")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the results as the API's JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per metric and arm.")
def results(key: str, as_json: bool, as_csv: bool) -> None:
    """KEY's results now: per metric and arm the effect, interval, p, adjusted p and chance to
    win; readers exposed per arm and the sample-ratio check."""
    from server.experiments.results import results as compute
    from server.experiments.results import results_csv, results_json

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    with _store() as (store, settings):
        found = compute(store, key, _now(settings), checker=settings.grounding_checker)
    if as_json:
        click.echo(json.dumps(results_json(found), ensure_ascii=False, indent=1))
    elif as_csv:
        click.echo(results_csv(found), nl=False)
    else:
        click.echo(results_text(found))


def results_text(r: Results) -> str:
    """The results as a person reads them in a terminal."""
    from server.experiments.results import difference, p_value, value

    e = r.experiment
    lines = [f"{e.key} ({e.status}): {e.hypothesis}"]
    lines.append("readers exposed: " + ", ".join(f"{a.name} {a.readers:,} ({a.weight:.0%})" for a in r.arms))
    if r.report is None:
        return "\n".join([*lines, "not started: nothing to analyse yet"])
    if r.blocked and r.report.srm is not None:
        lines.append(f"SAMPLE RATIO MISMATCH (p = {r.report.srm.p_value:.2g}): do not trust these results")
    for spec, role, effects in r.metric_effects():
        lines.append(f"\n{spec.label} [{role}]")
        for x in effects:
            interval = f"[{difference(x.ci_low, spec.unit)}, {difference(x.ci_high, spec.unit)}]"
            adjusted = p_value(x.p_adjusted) if x.p_adjusted is not None else "-"
            win = f"{x.chance_to_win:.0%}" if x.chance_to_win is not None else "-"
            lines.append(
                f"  {x.arm:<16} {value(x.mean_control, spec.unit)} -> {value(x.mean_arm, spec.unit)}  "
                f"effect {difference(x.absolute, spec.unit)} {interval}  p {p_value(x.p_value)}  "
                f"adj. p {adjusted}  chance to win {win}  (n {x.n_control:,}/{x.n_arm:,})"
            )
    lines += [f"warning: {w}" for w in r.report.warnings]
    return "\n".join(lines)
