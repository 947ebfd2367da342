"""What the API's bodies look like in OpenAPI, so the schema at /schema says what the handlers do.

`Problem` is every error (RFC 9457, application/problem+json) and `problems(...)` declares the
statuses a route can answer with. The event models mirror `recsys.Event` field for field, with
the read/dwell rule as a union on `type` so that a schema-valid event is a valid event; recsys
still validates every event (calendar range and all) before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.plugins.pydantic import PydanticSchemaPlugin
from litestar.typing import FieldDefinition
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

if TYPE_CHECKING:  # litestar's schema builder is private: named for the type checker only
    from litestar._openapi.schema_generation import SchemaCreator

PROBLEM_JSON = "application/problem+json"
# Ids as recsys and indexing accept them (word characters, '.', ':' and '-').
EventId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[\w.:-]+$")]
ArticleId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\w.:-]+$")]
# Free text an editor writes: anything but a NUL byte, which PostgreSQL cannot store.
NoNul = StringConstraints(pattern=r"^[^\x00]*$")


class RecordProblem(BaseModel):
    record: int
    field: str
    reason: str


class Problem(BaseModel):
    """An error as problem details; validation errors list what failed in `extra`, rejected
    batches in `errors`, server errors their `request_id` (also the X-Request-ID header)."""

    model_config = ConfigDict(extra="allow")

    status: int
    title: str | None = None
    detail: str | None = None
    extra: list[dict[str, Any]] | dict[str, Any] | None = None
    errors: list[RecordProblem] | None = None
    request_id: str | None = None


_WHY = {
    400: "The request is malformed or fails validation; nothing was changed.",
    401: "No valid token: send `Authorization: Bearer <token>`.",
    403: "The token's role may not do this, or (browsers) a write failed the origin or CSRF check.",
    404: "No such item.",
    409: "The item is no longer in the state this decision was made on.",
    413: "The request body is larger than MAX_BODY_BYTES.",
    415: "The body must be sent as application/json.",
    429: "Too many requests from this caller this minute.",
    503: "A dependency (the model, or the scheduler) cannot answer now.",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for these error statuses, each a `Problem` as problem+json."""
    return {
        code: ResponseSpec(
            data_container=Problem, description=_WHY[code], media_type=PROBLEM_JSON, generate_examples=False
        )
        for code in statuses
    }


class _EventFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: EventId
    # Typed `str`, not `str | None`: litestar drops an optional id's constraints from the schema.
    # Left out (None, never validated) it means the caller; an explicit null is refused.
    reader_id: EventId = Field(None, description="yours (the default); no one else's")  # type: ignore[assignment]
    article_id: ArticleId
    at: Annotated[AwareDatetime, Field(description="when it happened, with its UTC offset")]


class ReadEvent(_EventFields):
    type: Literal["read"]
    dwell_s: Annotated[float, Field(ge=0, le=6 * 3600, description="seconds spent reading")]


class OtherEvent(_EventFields):
    type: Literal["impression", "click", "thumbs_up", "thumbs_down"]


EventIn = Annotated[ReadEvent | OtherEvent, Field(discriminator="type")]


def as_record(event: ReadEvent | OtherEvent) -> dict[str, Any]:
    """The event as recsys reads it: no `reader_id` means the caller's (server.service fills it)."""
    return event.model_dump(exclude_none=True)


@dataclass(frozen=True)
class DocumentedAs:
    """Field metadata: the schema shows `annotation` for a field the handler validates itself
    (articles are checked one by one, so a push reports every bad record with its line)."""

    annotation: Any


class ClosedModels(PydanticSchemaPlugin):
    """litestar's pydantic schemas, plus `additionalProperties: false` for models refusing unknown
    fields (extra="forbid"): without it the schema allows bodies that validation refuses; and the
    `DocumentedAs` type for fields that carry one."""

    @classmethod
    def for_pydantic_model(cls, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        model = field_definition.annotation
        schema = super().for_pydantic_model(field_definition, schema_creator)
        if model.model_config.get("extra") == "forbid":
            schema.additional_properties = False
        for name, info in model.model_fields.items():
            marker = next((m for m in info.metadata if isinstance(m, DocumentedAs)), None)
            if marker is not None and schema.properties is not None:
                documented = FieldDefinition.from_annotation(marker.annotation)
                shown = schema_creator.for_field_definition(documented)
                given = schema.properties[name]
                if isinstance(shown, Schema) and isinstance(given, Schema):
                    shown.min_items, shown.max_items = given.min_items, given.max_items
                schema.properties[name] = shown
        return schema
