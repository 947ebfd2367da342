"""`briefing worker`: the scale-out deployment's scheduler process (DESIGN §3).

API workers run `briefing serve` with JOBS=false; one or more `briefing worker` processes run the
jobs. They compete for the leader lock (server.jobs.Leader): one schedules, the others stand by and
take over when it dies. A worker serves no reader or editor pages and no API, only the probes
(/health, /ready with its scheduler state) for the orchestrator's health checks. It reloads what
API workers change (a retraction's matrix, a promoted adapter) like they do (server.versions).

/metrics is left out: litestar's Prometheus middleware counts HTTP requests, and a worker's only
requests are its probes; job runs and their outcomes are in `job_runs` (/admin/jobs, the log).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from server.settings import Settings

if TYPE_CHECKING:  # the service pulls in SQLAlchemy, litestar and the models: `--help` stays light
    from litestar import Litestar

    from server.jobs import Jobs
    from server.service import Service

EMBEDDED_STORE = (
    "briefing worker needs a Qdrant server (QDRANT_URL): the embedded store in {path} opens in "
    "one process only, so the API workers could not open it while the worker holds it. On one "
    "machine without a Qdrant server, run `briefing serve` alone: it runs the scheduler itself "
    "(JOBS=true, the default)."
)


@click.command()
@click.option("--host", help="Listen address of the probes (default: HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port of the probes (default: PORT or 8000).")
def worker(host: str | None, port: int | None) -> None:
    """Run the scheduled jobs for API workers started with JOBS=false.

    The jobs are those `briefing serve` runs by itself (ingest FEEDS, refresh the candidates,
    refit the ranker, draft summaries, precompute briefings, tune the adapter, retention); API
    workers reload the refreshed matrix, ranker and adapter within VERSION_POLL_S. Answers only
    /health and /ready (its "scheduler" says "ok" or "standby"). Start more than one for
    failover: one holds the leader lock and schedules, the others take over within seconds when
    it dies. Needs a Qdrant server (QDRANT_URL) and the database the API workers use
    (DATABASE_URL); JOBS is not read. Ctrl-C or SIGTERM stops running jobs at their next item
    (the log says which item it waits for), then the process.
    """
    from server.container import build_jobs, build_service
    from server.serve import quiet_collector, run_until_signal, usable_data_dir

    settings = Settings.from_env()
    refuse_embedded_store(settings)
    host, port = host or settings.service.host, port or settings.service.port
    settings = replace(settings, service=replace(settings.service, host=host, port=port, jobs=True))
    usable_data_dir(settings.data_dir)
    click.echo("loading the index, the models and the database ...")
    stop = threading.Event()  # set on Ctrl-C: jobs and the LLM start nothing new
    service = build_service(settings, stop=stop)
    jobs = build_jobs(settings, service, stop=stop, at_start=("summarize-new",))
    click.echo(f"the scheduler's probes answer on http://{host}:{port}/health and /ready")
    quiet_collector()
    run_until_signal(worker_app(service, jobs), service, jobs, host, port)


def refuse_embedded_store(settings: Settings) -> None:
    """A worker on the embedded Qdrant store would lock the API workers out of it. QDRANT_PATH
    `:memory:` is let through: an index of the worker's own, for trying the process layout."""
    qdrant = settings.qdrant
    if qdrant.url is None and qdrant.path not in (None, ":memory:"):
        raise click.ClickException(EMBEDDED_STORE.format(path=qdrant.path))


def worker_app(service: Service, jobs: Jobs) -> Litestar:
    """The probes over `service`, and the scheduler in the lifespan (as `server.app` runs it)."""
    from litestar import Litestar
    from litestar.datastructures import State
    from litestar.di import Provide

    from server.api import Probes
    from server.app import scheduler_lifespan

    return Litestar(
        route_handlers=[Probes],
        dependencies={"service": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        state=State({"jobs": None}),
        lifespan=[scheduler_lifespan(jobs)],
        openapi_config=None,
    )
