"""The experiments API for product teams (OpenAPI at /schema, tag "product"): define, start, stop,
decide, and read results as JSON or CSV.

Owns `ExperimentsApi` at /v1/experiments. The product role reads and writes; an admin may read
(403 on writes); editors and readers get 403. Bodies are checked whole by
`model.parse_experiment`, so a refused definition answers 400 with every reason in `reasons`
(server.app maps `ExperimentInvalid`); the pydantic models here only document the shape in the
schema. Every change is written to the audit log by the store, in the change's transaction.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from pydantic import BaseModel, ConfigDict, Field

from server.auth import allow
from server.experiments.model import GUARDRAILS, OUTCOMES, to_json
from server.experiments.results import results, results_csv, results_json
from server.schema import DocumentedAs, problems
from server.service import Actor, Service

ANY = problems(400, 401, 403, 429)
BODY = problems(413, 415)
Key = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,59}$")]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
Hypothesis = Annotated[str, Field(min_length=1, max_length=2000, description="what should change, and why")]
# The metric registry's names, for the schema only (parse_experiment checks them).
Outcome: Any = Literal.__getitem__(OUTCOMES)
Guardrail: Any = Literal.__getitem__(GUARDRAILS)


class ArmDoc(BaseModel):
    """An arm: a briefing variant and its share of the experiment's traffic."""

    model_config = ConfigDict(extra="forbid")

    name: Slug
    weight: Annotated[float, Field(gt=0, le=1, description="weights of all arms sum to 1")]
    article_prompt: str = Field("article", description="an article template (name or name@version)")
    update_prompt: str = Field("update", description="a story-update template")
    greeting_prompt: str = Field("greeting", description="a greeting template")
    adapter: str | None = Field(None, description="a registered LoRA adapter's id (briefing tune list)")
    backend: str | None = Field(None, description="an LLM backend (LLM_BACKEND's choices)")
    items: Annotated[int, Field(ge=1, le=20)] | None = Field(None, description="items per briefing")


Arms = Annotated[list[ArmDoc], Field(min_length=2, max_length=8, description="the first arm is the control")]


class TargetingDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[str] = Field(default_factory=list, description="reader languages; empty: any")
    readers: Literal["all", "new", "returning"] = "all"
    traffic: Annotated[float, Field(gt=0, le=1, description="share of the layer's readers")] = 1.0


class ExperimentBody(BaseModel):
    """An experiment definition (status and dates are set by start, stop and decide). Any JSON
    object is taken and checked whole by `parse_experiment`, which names every problem at once;
    the schema shows each field's real type. In a PATCH, send only the fields that change."""

    model_config = ConfigDict(extra="allow")  # unknown fields are refused, by name, in `reasons`

    key: Annotated[Any, DocumentedAs(Key)] = None
    hypothesis: Annotated[Any, DocumentedAs(Hypothesis)] = None
    arms: Annotated[Any, DocumentedAs(Arms)] = None
    targeting: Annotated[Any, DocumentedAs(TargetingDoc)] = None
    primary: Annotated[Any, DocumentedAs(Outcome)] = None
    secondary: Annotated[Any, DocumentedAs(list[Outcome])] = None
    guardrails: Annotated[Any, DocumentedAs(list[Guardrail])] = None  # default: all of them
    layer: Annotated[Any, DocumentedAs(Slug)] = None
    sequential: Annotated[Any, DocumentedAs(bool)] = None

    def fields(self) -> dict[str, Any]:
        """The fields sent (null included), unknown ones too."""
        return self.model_dump(exclude_unset=True)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arm: Slug


def _actor(request: Request[Any, Any, Any]) -> Actor:
    actor = request.user
    assert isinstance(actor, Actor)  # the auth middleware guarantees it on guarded routes
    return actor


def _checker(service: Service) -> str | None:
    return getattr(service.summarizer.checker, "name", None)


class ExperimentsApi(Controller):
    path = "/v1/experiments"
    guards = (allow("product", "admin"),)  # writes add allow("product"): admins only read
    tags = ("product",)

    @get("/", sync_to_thread=True, responses=ANY)
    def list_experiments(self, service: NamedDependency[Service]) -> list[dict[str, Any]]:
        """Every experiment, oldest first, with its status."""
        return [to_json(e) for e in service.experiments.list()]

    @post(
        "/",
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        guards=[allow("product")],
        responses={**ANY, **BODY},
    )
    def create(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        data: JSONBody[ExperimentBody],
    ) -> dict[str, Any]:
        """Define an experiment as a draft. A bad definition is a 400 whose `reasons` name every
        problem (weights not summing to 1, an unknown template or adapter, ...)."""
        e = service.experiments.parse(data.fields())
        return to_json(service.experiments.create(_actor(request), e))

    @get("/{key:str}", sync_to_thread=True, responses={**ANY, **problems(404)})
    def get_experiment(self, service: NamedDependency[Service], key: FromPath[str]) -> dict[str, Any]:
        return to_json(service.experiments.get(key))

    @patch(
        "/{key:str}",
        sync_to_thread=True,
        guards=[allow("product")],
        responses={**ANY, **BODY, **problems(404)},
    )
    def update(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        key: FromPath[str],
        data: JSONBody[ExperimentBody],
    ) -> dict[str, Any]:
        """Change fields of a draft (send only those that change). A running experiment may change
        only its hypothesis and which secondary and guardrail metrics show; arms never."""
        return to_json(service.experiments.update(_actor(request), key, data.fields()))

    @post(
        "/{key:str}/start",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        guards=[allow("product")],
        responses={**ANY, **problems(404)},
    )
    def start(
        self, request: Request[Any, Any, Any], service: NamedDependency[Service], key: FromPath[str]
    ) -> dict[str, Any]:
        """Start a draft now, in a free slice of its layer (400 if the layer has no room left)."""
        return to_json(service.experiments.start(_actor(request), key, service.clock()))

    @post(
        "/{key:str}/stop",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        guards=[allow("product")],
        responses={**ANY, **problems(404)},
    )
    def stop(
        self, request: Request[Any, Any, Any], service: NamedDependency[Service], key: FromPath[str]
    ) -> dict[str, Any]:
        """Stop a running experiment now: its readers get the default briefing from then on."""
        return to_json(service.experiments.stop(_actor(request), key, service.clock()))

    @post(
        "/{key:str}/decide",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        guards=[allow("product")],
        responses={**ANY, **BODY, **problems(404)},
    )
    def decide(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        key: FromPath[str],
        data: JSONBody[Decision],
    ) -> dict[str, Any]:
        """Record the arm chosen; a running experiment stops with the decision."""
        return to_json(service.experiments.decide(_actor(request), key, data.arm, service.clock()))

    @get("/{key:str}/results", sync_to_thread=True, responses={**ANY, **problems(404)})
    def results(self, service: NamedDependency[Service], key: FromPath[str]) -> dict[str, Any]:
        """Per metric and arm: effect with interval, p and Holm-adjusted p, chance to win, CUPED's
        variance reduction; readers exposed per arm; the sample-ratio check (`blocked` when it
        fails: then no figure can be trusted); warnings; the primary metric by day; provenance."""
        found = results(service.experiments, key, service.clock(), checker=_checker(service))
        return results_json(found)

    @get(
        "/{key:str}/results.csv",
        sync_to_thread=True,
        media_type="text/csv",
        responses={**ANY, **problems(404)},
    )
    def results_csv(self, service: NamedDependency[Service], key: FromPath[str]) -> Response[str]:
        """The results tables as CSV: one row per metric and arm."""
        found = results(service.experiments, key, service.clock(), checker=_checker(service))
        disposition = f'attachment; filename="{key}-results.csv"'
        return Response(
            results_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": disposition},
        )


__all__ = ["ExperimentsApi"]
