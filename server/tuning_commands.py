"""`briefing tune`: build a dataset snapshot, train, gate, promote and roll back LoRA adapters.

Owns the click group server/cli.py adds to `briefing`. The commands work on this machine's
DATA_DIR and DATABASE_URL (the service's stores and adapter registry), as the operator ($USER) in
the admin role; a running service picks a promotion or rollback up at its next drafting job (the
registry's version). `run` is the nightly job's whole loop; `make tune` runs it on the demo
newsroom. Imports beyond click are inside the commands: `briefing --help` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from briefing.tuning.config import TuneConfig
    from briefing.tuning.estimate import Estimate
    from briefing.tuning.registry import AdapterRecord
    from server.service import Service
    from server.settings import Settings


@click.group()
def tune() -> None:
    """LoRA adapters: dataset snapshots, training, the evaluation gate, promotion and rollback."""


@contextmanager
def _service() -> Iterator[tuple[Service, Settings]]:
    """The service's parts on DATA_DIR with the adapter registry; errors as one-line messages."""
    from briefing import GenerationError
    from server.container import build_service
    from server.settings import Settings
    from server.tuning import TuningBusy

    settings = Settings.from_env()
    service = build_service(settings)
    try:
        yield service, settings
    except (TuningBusy, GenerationError, KeyError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        service.close()
        service.indexer.index.close()


def _actor() -> str:
    return os.environ.get("USER") or "cli"


def _registry(service: Service) -> Any:
    if service.adapters is None:
        raise click.ClickException("this service has no adapter registry")
    return service.adapters.registry


def _known(registry: Any, adapter_id: str) -> AdapterRecord:
    record = registry.get(adapter_id)
    if record is None:
        raise click.ClickException(f"no adapter {adapter_id!r} (briefing tune list)")
    return record  # type: ignore[no-any-return]


@tune.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_adapters(as_json: bool) -> None:
    """Registered adapters, newest first, with their state and gate result."""
    with _service() as (service, _):
        records = _registry(service).all()
    if as_json:
        click.echo(json.dumps([_record_json(r) for r in records], indent=1, default=str))
        return
    if not records:
        click.echo("no adapters yet (briefing tune run)")
    for record in records:
        click.echo(_record_line(record))


@tune.command("build-dataset")
@click.option(
    "--articles", type=int, default=None, help="Self-training articles (default TUNE_ARTICLES; 0: all)."
)
def build_dataset(articles: int | None) -> None:
    """Snapshot the training data: editor decisions and self-training on the newsroom's articles."""
    from dataclasses import replace

    from server.tuning import newsroom_snapshot

    with _service() as (service, settings):
        config = settings.tune if articles is None else replace(settings.tune, articles=articles)
        if service.adapters is not None:
            service.adapters.sync()
        snapshot = newsroom_snapshot(service, settings, config, progress=True)
    click.echo(f"snapshot {snapshot.id}: {json.dumps(dict(snapshot.counts), default=str)}")
    click.echo(f"sources: {json.dumps(dict(snapshot.sources))}")


@tune.command()
@click.argument("snapshot_id")
@click.option("--dpo", is_flag=True, help="Also the DPO step on the snapshot's preference pairs.")
def train(snapshot_id: str, dpo: bool) -> None:
    """Train a candidate adapter on SNAPSHOT_ID's train split (resumes an interrupted run)."""
    from briefing.tuning.pipeline import Workspace
    from briefing.tuning.snapshots import load_snapshot
    from server.tuning import build_tuner, tuning_lock

    with _service() as (service, settings), tuning_lock(settings.data_dir, _actor()):
        snapshot = load_snapshot(Workspace(settings.data_dir).tuning, snapshot_id)
        tuner = build_tuner(service, settings, settings.tune, progress=True)
        record, trained = tuner.train(snapshot)
        if dpo:
            record, trained = tuner.train(snapshot, trained)
    click.echo(
        f"candidate {record.id} ({_languages(record)}): {trained.steps} steps, "
        f"{trained.tokens_per_s:.0f} tokens/s, {trained.seconds:.0f} s"
    )


@tune.command("eval")
@click.argument("adapter_id")
def evaluate(adapter_id: str) -> None:
    """Gate ADAPTER_ID against the promoted adapter on its snapshot's eval split; records the report."""
    from briefing.tuning.evaluate import decide
    from briefing.tuning.pipeline import Workspace, eval_requests, gate_outcomes, nothing_to_gate
    from briefing.tuning.snapshots import load_snapshot
    from server.tuning import build_tuner

    with _service() as (service, settings):
        registry = _registry(service)
        record = _known(registry, adapter_id)
        snapshot = load_snapshot(Workspace(settings.data_dir).tuning, record.snapshot_id)
        pairs = eval_requests(service.summarizer, snapshot.eval, settings.tune.eval_limit)
        if not pairs:  # else the bootstrap's "need two non-empty lists" would be all it says
            raise click.ClickException(nothing_to_gate(snapshot))
        tuner = build_tuner(service, settings, settings.tune)
        current = registry.promoted()
        baseline = gate_outcomes(service.summarizer, pairs, current.id if current else None)
        report = decide(baseline, tuner.outcomes(record, pairs), tuner.embedder, tuner.rule)
        registry.set_report(record.id, report.to_json())
    click.echo(_gate_text(report.to_json()))


@tune.command()
@click.argument("adapter_id")
def promote(adapter_id: str) -> None:
    """Promote ADAPTER_ID; refused unless its gate report says it beat the promoted one."""
    with _service() as (service, _):
        registry = _registry(service)
        record = _known(registry, adapter_id)
        if not (record.report or {}).get("promote"):
            reasons = "; ".join(
                (record.report or {}).get("reasons", ["it has not been gated (briefing tune eval)"])
            )
            raise click.ClickException(f"refused: {reasons}")
        promoted = registry.promote(adapter_id, _actor())
    click.echo(f"promoted {promoted.id} (previous: {promoted.previous or 'the base model'})")


@tune.command()
def rollback() -> None:
    """Put the previously promoted adapter (or the base model) back in one step."""
    with _service() as (service, _):
        registry = _registry(service)
        current = registry.promoted()
        restored = registry.rollback(_actor())
    if current is None:
        click.echo("nothing is promoted: nothing to roll back")
    else:
        click.echo(f"retired {current.id}; drafting with {restored.id if restored else 'the base model'}")


@tune.command()
@click.option("--demo", is_flag=True, help="Ingest the demo newsroom first when the index is empty.")
@click.option(
    "--articles", type=int, default=None, help="Self-training articles (default TUNE_ARTICLES; 0: all)."
)
def run(demo: bool, articles: int | None) -> None:
    """The whole loop, as the nightly job runs it: snapshot → train → gate → promote or keep."""
    import time
    from dataclasses import replace

    from server.tuning import tune as tune_once

    with _service() as (service, settings):
        if demo and next(iter(service.indexer.index.scroll()), None) is None:
            from server.serve import _load_demo

            _load_demo(service)
        config = settings.tune if articles is None else replace(settings.tune, articles=articles)
        count, expected = _estimate(service, settings, config)
        minutes = expected.seconds / 60
        click.echo(f"tuning on {count} articles: expect about {minutes:.0f} minutes ({expected.source()})")
        started = time.monotonic()
        report = tune_once(service, replace(settings, tune=config), actor=_actor(), progress=True)
    click.echo(_gate_text(report.get("gate") or {"promote": False, "reasons": report["reasons"]}))
    if report["candidate"] is None:
        click.echo("no candidate trained")
    else:
        verdict = "promoted" if report["promoted"] else "kept as a candidate"
        click.echo(f"candidate {report['candidate']}: {verdict}")
    rates = ", ".join(f"{k} {v:g}" for k, v in report.get("rates", {}).items())
    took = (time.monotonic() - started) / 60
    click.echo(f"took {took:.0f} minutes (estimated {minutes:.0f}); measured: {rates or 'nothing'}")


def _estimate(service: Service, settings: Settings, config: TuneConfig) -> tuple[int, Estimate]:
    """The articles a run samples and the time it should take, from the rates the last run on
    this DATA_DIR measured (the built-in ones where it measured none)."""
    from briefing.tuning.estimate import estimate, last_rates
    from briefing.tuning.pipeline import Workspace
    from server.tuning import tuning_articles

    train, held = tuning_articles(service, config)
    count = len(train)
    measured, at = last_rates(Workspace(settings.data_dir).tuning)
    expected = estimate(
        count,
        config.candidates,
        config.preference,
        measured,
        at,
        eval_share=config.eval_share,
        eval_limit=config.eval_limit,
        held_out=len(held),
    )
    return count, expected


def _record_line(record: AdapterRecord) -> str:
    report = record.report or {}
    verdict = "gated: promote" if report.get("promote") else ("gated: keep" if report else "not gated")
    return (
        f"{record.id}  {record.state:<9} {_languages(record):<18} {record.snapshot_id}  {verdict}  "
        f"{record.created_at:%Y-%m-%d %H:%M}"
    )


def _languages(record: AdapterRecord) -> str:
    """ "en+nb" for a set with a part per language, "joint (en, nb)" for one adapter trained on
    both ("joint" when an old record did not say what it was trained on)."""
    from briefing.tuning.registry import JOINT, languages_of, layout_of

    languages = languages_of(record)
    if layout_of(record) == JOINT:
        return f"joint ({', '.join(languages)})" if languages else "joint"
    return "+".join(languages)


def _record_json(record: AdapterRecord) -> dict[str, Any]:
    from dataclasses import asdict

    from briefing.tuning.registry import languages_of, layout_of

    return {**asdict(record), "layout": layout_of(record), "languages": list(languages_of(record))}


def _gate_text(report: dict[str, Any]) -> str:
    lines = [f"gate: {'promote' if report.get('promote') else 'keep'}"]
    for name, delta in (report.get("deltas") or {}).items():
        base, cand = report["base"].get(name, float("nan")), report["candidate"].get(name, float("nan"))
        ci = f"[{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}]"
        lines.append(f"  {name:<14} {base:8.3f} → {cand:8.3f}   Δ {delta['mean']:+.3f} {ci}")
    lines += [f"  - {r}" for r in report.get("reasons", [])]
    return "\n".join(lines)
