"""Fuzz the published OpenAPI spec (schemathesis) in-process against the ASGI app, once per role.

Every operation is called with generated valid and invalid input, signed in as a reader, an
editor, a product person and an admin: no answer may be a server error (a 503 only where the
operation documents it: this app, like a scale-out API worker, runs no scheduler, so the job
routes answer 503), every status must be one the operation documents, and every body must
match the schema. Bounded for CI: a fixed number of examples per operation and a derandomized
run, so a failure reproduces."""

from __future__ import annotations

import json
import re
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar, Response, get
from litestar.openapi.datastructures import ResponseSpec
from schemathesis import APIOperation, BaseSchema, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from briefing import Generator
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from server.auth import ROLES
from server.experiments import parse_experiment
from server.service import Actor, Service
from tests.service import DEMO, auth, demo_service

pytestmark = pytest.mark.slow
EXAMPLES = 30  # per operation and role, valid and invalid input: 26 operations x 4 roles
# 503 is allowed by not_a_server_error only because status_code_conformance then requires the
# operation to document it (the job routes and the LLM-backed ones do; nothing else may).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CONFIG = {
    "generation": {"with-security-parameters": False},  # the role's token is the credential
    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
}
SUBJECTS = {"reader": "r02", "editor": "edith", "product": "paul", "admin": "ada"}
# Operations each role may use that valid input must be able to succeed on (a sample, not all).
OWN = {
    "reader": {"GET /v1/briefing", "POST /v1/events", "GET /v1/settings", "PUT /v1/settings"},
    "editor": {"GET /v1/review/queue"},
    "product": {"GET /v1/experiments"},  # a generated experiment is rarely one that validates
    "admin": {"GET /v1/experiments", "GET /metrics"},
}


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[tuple[Litestar, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'b.db'}"
    with demo_service(tmp, url, embedder, chunker, demo_articles[:6], llamacpp) as (settings_, service):
        yield create_app(settings_, service), known_ids(service, demo_articles[:6])


def known_ids(service: Service, articles: list[Article]) -> dict[str, str]:
    """Path parameters that name something that exists: a draft summary (for the review routes),
    the demo experiment, a reader and an article. Generated ids alone only ever reach the 404s."""
    (draft,) = service.summarizer.summarize([articles[0].id])
    demo = json.loads((DEMO / "experiment.json").read_text(encoding="utf-8"))
    experiment = service.experiments.create(Actor("fuzz", "product"), parse_experiment(demo))
    return {"summary_id": draft.id, "key": experiment.key, "reader_id": "r03", "article_id": articles[1].id}


@pytest.fixture(scope="module")
def app(running: tuple[Litestar, dict[str, str]]) -> Litestar:
    return running[0]


@pytest.fixture(scope="module")
def schema(app: Litestar) -> BaseSchema:
    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_asgi("/schema/openapi.json", app, config=config)


@pytest.mark.parametrize("role", ROLES)
def test_no_server_errors_and_every_answer_matches_the_schema(
    schema: BaseSchema, running: tuple[Litestar, dict[str, str]], role: str
) -> None:
    # schemathesis' pytest integration (`from_fixture`) fails on pytest 9 (`Function._nodeid`), so
    # each operation runs as a plain hypothesis test; every operation runs, failures are collected.
    headers = auth(SUBJECTS[role], role)
    failures: dict[str, str] = {}
    statuses: Counter[tuple[str, int]] = Counter()
    for operation in operations(schema):
        try:
            fuzz(operation, headers, statuses, running[1])
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is the latter
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    # The role's token was accepted everywhere, and its own routes answered with success.
    assert not [label for label, status in statuses if status == 401]
    allowed = {label for label, status in statuses if 200 <= status < 300}
    assert OWN[role] <= allowed, f"no 2xx for {sorted(OWN[role] - allowed)}"


Operation = APIOperation[Any, Any, Any, Any]


def operations(schema: BaseSchema) -> list[Operation]:
    """Every operation in the spec; one the loader cannot read fails the test with its reason."""
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found.append(result.ok())
    return found


def fuzz(
    operation: Operation,
    headers: dict[str, str],
    statuses: Counter[tuple[str, int]],
    known: dict[str, str] | None = None,
) -> None:
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE, headers=headers),
        operation.as_strategy(GenerationMode.NEGATIVE, headers=headers),
    ]
    named = {p: (known or {})[p] for p in re.findall(r"{(\w+)}", operation.path) if p in (known or {})}
    if named:  # the rest of the request still generated, valid or not
        for mode in GenerationMode:
            strategies.append(operation.as_strategy(mode, headers=headers, path_parameters=named))
    strategy = st.one_of(strategies)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,  # the first call of an operation warms caches; the count bounds the time
        derandomize=True,  # CI: the same cases every run, so a failure reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Operation]) -> None:
        response = case.call_and_validate(checks=CHECKS)
        statuses[operation.label, response.status_code] += 1

    run()


@dataclass
class Count:
    count: int


@get("/crash", sync_to_thread=False)
def crash(n: int) -> Count:
    raise RuntimeError("a bug")


@get("/liar", sync_to_thread=False, responses={200: ResponseSpec(Count)})
def liar(n: int) -> Response[Any]:
    return Response({"count": "many"})


@pytest.mark.parametrize(("handler", "finding"), [(crash, "ServerError"), (liar, "JsonSchemaError")])
def test_the_harness_fails_on_a_server_error_and_on_an_answer_off_the_schema(
    handler: Any, finding: str
) -> None:
    toy = schemathesis.openapi.from_asgi("/schema/openapi.json", Litestar([handler]))
    (operation,) = operations(toy)
    with pytest.raises((Exception, BaseExceptionGroup)) as caught:
        fuzz(operation, {}, Counter())
    assert finding in "".join(traceback.format_exception(caught.value))
