"""`briefing serve` (the web service, optionally on the demo newsroom) and `briefing token`."""

from __future__ import annotations

import contextlib
import gc
import logging
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from server.settings import Settings

if TYPE_CHECKING:  # the service pulls in SQLAlchemy and litestar: `briefing token` stays light
    from litestar import Litestar

    from server.jobs import Jobs
    from server.service import Service

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
DEMO_CLOCK = "2026-11-19T23:00:00+01:00"  # the end of the demo newsroom's fourth day
DEMO_PEOPLE = (("r02", "reader"), ("edith", "editor"), ("ada", "admin"), ("paul", "product"))


@click.command()
@click.option(
    "--demo",
    is_flag=True,
    help="Ingest the demo newsroom and its readers and run the service clock from "
    f"{DEMO_CLOCK} (unless CLOCK_START is set); summaries of the newest articles are drafted in the "
    "background (progress in the log and on /ready), readers get the articles' own words until then.",
)
@click.option("--host", help="Listen address (default: HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: PORT or 8000).")
def serve(demo: bool, host: str | None, port: int | None) -> None:
    """Run the web service: API (OpenAPI at /schema), reader and editor pages, and the scheduler
    (unless JOBS=false: several API workers, and `briefing worker` runs the jobs).

    With --demo, prints sign-in links for a demo reader, an editor, an admin and a product person
    (never without it: the output is a log, and the links carry week-long tokens). The service
    answers as soon as the index, models and database are loaded; the job summarize-new starts at
    once in the background. Ctrl-C stops running jobs at their next item (the log says which
    item it waits for), then the service.
    """
    import os

    from server.app import create_app
    from server.container import build_jobs, build_service

    if demo:
        os.environ.setdefault("CLOCK_START", DEMO_CLOCK)
        os.environ.setdefault("SUMMARIZE_PER_RUN", "8")  # the demo's developing stories, newest first
    settings = Settings.from_env()
    host, port = host or settings.service.host, port or settings.service.port
    # The listen address decides the cookie's Secure default (ServiceConfig.secure_cookies).
    settings = replace(settings, service=replace(settings.service, host=host, port=port))
    usable_data_dir(settings.data_dir)
    click.echo("loading the index, the models and the database ...")
    stop = threading.Event()  # set on Ctrl-C: jobs and the LLM start nothing new
    service = build_service(settings, stop=stop)
    jobs = (
        build_jobs(settings, service, stop=stop, at_start=("summarize-new",))
        if settings.service.jobs
        else None
    )
    if demo:
        _load_demo(service)
    if jobs is not None:
        click.echo(
            "drafting summaries in the background (job summarize-new; progress in the log and on /ready)"
        )
    _links(settings, host, port, demo)
    quiet_collector()
    run_until_signal(create_app(settings, service, jobs), service, jobs, host, port)


def _links(settings: Settings, host: str, port: int, demo: bool) -> None:
    """Sign-in links for the demo's people with --demo only: elsewhere the output is a log, and a
    week-long admin token in a log is an admin login for whoever reads it."""
    from server.auth import issue_token, secret

    click.echo(f"\nthe service is starting on http://{host}:{port} (API schema: /schema)")
    if not demo:
        click.echo("sign-in tokens: briefing token NAME --role reader|editor|product|admin")
        return
    key = secret(settings.service.jwt_secret, settings.data_dir)
    click.echo("sign in (open a link, then press Sign in) as:")
    for who, role in DEMO_PEOPLE:
        token = issue_token(key, who, role, timedelta(days=7))
        click.echo(f"  {role:<8} {who:<6} http://{host}:{port}/login?token={token}")


def quiet_collector() -> None:
    # Models, index and caches are millions of long-lived objects: keep them out of the cyclic
    # collector. Automatic full collections still paused the event loop for 40-210 ms (seen with
    # gc.callbacks under load: the p99 of cached briefings); they are off, and the scheduler's
    # `collect-garbage` job runs one every 10 minutes instead. Young collections stay automatic.
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1_000_000_000)


def run_until_signal(app: Litestar, service: Service, jobs: Jobs | None, host: str, port: int) -> None:
    """uvicorn until SIGINT/SIGTERM; the signal itself tells the jobs to stop (`Jobs.halt`), so
    they stop at their next item while the server drains its requests, not only after that.
    Meanwhile the process reloads what other processes change (`server.versions`)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if jobs is not None:  # off the signal handler: halt() logs and takes locks
                threading.Thread(target=jobs.halt, name="jobs-halt", daemon=True).start()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn (>= 0.29) raises the caught signal again once it has shut down: SIGINT
            # then ends in click's "Aborted!" (exit 1) and SIGTERM kills the process before the
            # `finally` below closes Qdrant's files. The shutdown was orderly: exit normally.
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # job runs are recorded in job_runs
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    if service.versions is not None:
        service.versions.start()
    try:
        server.run()
    finally:
        if service.versions is not None:
            service.versions.close()
        service.close()
        service.indexer.index.close()  # Qdrant's local files, before the interpreter winds down
    if not server.started:
        raise click.ClickException(f"the service could not start on {host}:{port} (see the log above)")


def _load_demo(service: Service) -> None:
    import os

    import torch

    from indexing import open_source
    from server.readers import parse_readers

    # Nothing is served yet: the ingest's embeddings may use every core, not the half the
    # service leaves its jobs (server.container.leave_cores_for_requests).
    serving = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or serving)
    try:
        report = service.ingest(list(open_source(str(DEMO_DIR / "articles"))))
    finally:
        torch.set_num_threads(serving)
    click.echo(f"demo newsroom: {report.summary()}")
    readers = DEMO_DIR / "readers.jsonl"  # with each reader's language (`briefing readers import`)
    added = service.import_readers(parse_readers(readers.read_text(encoding="utf-8"), str(readers)))
    click.echo(f"demo readers: {added} new events")
    _demo_experiment(service)


def _demo_experiment(service: Service) -> None:
    """A draft experiment for the product person to start (readers see no arm until they do)."""
    import json

    from server.experiments import parse_experiment
    from server.service import Actor

    experiment = parse_experiment(json.loads((DEMO_DIR / "experiment.json").read_text(encoding="utf-8")))
    if experiment.key not in {e.key for e in service.experiments.list()}:
        service.experiments.create(Actor("demo", "admin"), experiment)
        click.echo(f"demo experiment: {experiment.key} (a draft; start it at /product/experiments)")


@click.command()
@click.argument("subject")
@click.option("--role", type=click.Choice(["reader", "editor", "product", "admin"]), required=True)
@click.option(
    "--days",
    default=7.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True, max=3650),
    help="How long the token is valid (more than 0, at most 3650).",
)
def token(subject: str, role: str, days: float) -> None:
    """Print an access token for SUBJECT (a reader id or a staff member) with ROLE.

    Send it as `Authorization: Bearer <token>`, or open /login?token=<token> in a browser and
    press Sign in. Prometheus scrapes /metrics with an admin token.
    """
    from server.auth import issue_token, secret

    settings = Settings.from_env()
    usable_data_dir(settings.data_dir)
    click.echo(
        issue_token(
            secret(settings.service.jwt_secret, settings.data_dir), subject, role, timedelta(days=days)
        )
    )


def usable_data_dir(path: Path) -> None:
    """DATA_DIR exists (or can be made) and takes a file, else one line saying so: the service
    would otherwise stop deep in the database or index setup with a long traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise click.ClickException(f"DATA_DIR {str(path)!r} is not usable: {reason}") from None
