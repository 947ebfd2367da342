"""The article schema, validated on the way in, and its content hash.

Everything that enters the index passes through `Article.model_validate`, so one place decides
what a well-formed article is. Titles, leads and bodies are plain text: markup from any source
(a feed, a JSONL file, a CMS push) is reduced to text here, and the original is kept in
`original_html` for editors. Pages still escape on output.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from indexing.text import has_markup, html_to_text

ArticleId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[\w.:-]+$"),
]


def _has_utc_time(value: datetime) -> datetime:
    # Times are compared and stored in UTC: 0001-01-01T00:30+01:00 has no UTC time.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time leaves the calendar (years 1-9999) in UTC") from None
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=60)]
Moment = Annotated[AwareDatetime, AfterValidator(_has_utc_time)]

_SECTION = r"^[a-z][a-z0-9_-]{0,39}$"


def _normalize_name(value: Any) -> Any:
    # Lower-case before the pattern check: "Sport" and "sport" are the same section.
    return value.strip().lower() if isinstance(value, str) else value


# Fields that define an article's content: a change to any of them means re-embedding.
# updated_at is left out so that re-publishing unchanged text writes nothing.
_TEXT_FIELDS = ("title", "lead", "body")
_CONTENT_FIELDS = ("url", "title", "lead", "body", "section", "tags", "language", "publication")


class Article(BaseModel):
    """One news article as the newsroom publishes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: ArticleId
    url: HttpUrl
    title: Annotated[Text, Field(min_length=1, max_length=500)]
    lead: Annotated[Text, Field(max_length=5_000)] = ""
    body: Annotated[Text, Field(min_length=1, max_length=200_000)]
    section: Annotated[str, BeforeValidator(_normalize_name), StringConstraints(pattern=_SECTION)]
    tags: Annotated[list[Tag], Field(max_length=50)] = Field(default_factory=list)
    language: Annotated[str, BeforeValidator(_normalize_name), StringConstraints(pattern=r"^[a-z]{2,3}$")]
    publication: Annotated[Text, Field(min_length=1, max_length=200)]
    published_at: Moment
    updated_at: Moment | None = None
    # field -> the text as it arrived, for the fields that held markup (editors see it; readers,
    # the index and the LLM see the reduced text).
    original_html: dict[str, Annotated[str, Field(max_length=200_000)]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _markup_to_text(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        marked = {f: raw[f] for f in _TEXT_FIELDS if isinstance(raw.get(f), str) and has_markup(raw[f])}
        if not marked:
            return raw
        clean = {f: _as_text(f, value) for f, value in marked.items()}
        original = raw.get("original_html")
        return {
            **raw,
            **clean,
            "original_html": {**(original if isinstance(original, dict) else {}), **marked},
        }

    @field_validator("tags")
    @classmethod
    def _dedupe_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))

    @field_validator("title", "lead", "body", "publication", "tags")
    @classmethod
    def _no_nul(cls, value: str | list[str]) -> str | list[str]:
        # No reader needs one, and PostgreSQL cannot store text holding one (a push was a 500).
        if any("\x00" in text for text in ([value] if isinstance(value, str) else value)):
            raise ValueError("contains a NUL byte")
        return value

    @model_validator(mode="after")
    def _updated_not_before_published(self) -> Self:
        if self.updated_at is not None and self.updated_at < self.published_at:
            raise ValueError("updated_at is earlier than published_at")
        return self

    @property
    def last_modified(self) -> datetime:
        return self.updated_at or self.published_at

    def content_hash(self) -> str:
        """sha256 over the content fields; equal hashes mean nothing to re-index."""
        data = self.model_dump(mode="json", include=set(_CONTENT_FIELDS))
        canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def text_for_embedding(self) -> str:
        return "\n\n".join(part for part in (self.title, self.lead, self.body) if part)


def _as_text(field: str, value: str) -> str:
    text = html_to_text(value)
    return " ".join(text.split()) if field == "title" else text  # a title is one line


@dataclass(frozen=True)
class RecordError:
    """Why one input record was rejected: where it is and what is wrong with it."""

    source: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.field}: {self.reason}"


def validate_record(raw: Any, source: str, line: int) -> Article | list[RecordError]:
    """An `Article`, or one error per offending field."""
    if not isinstance(raw, dict):
        return [RecordError(source, line, "<record>", f"expected a JSON object, got {type(raw).__name__}")]
    try:
        return Article.model_validate(raw)
    except ValidationError as exc:
        return record_errors(exc, source, line)


def record_errors(exc: ValidationError, source: str, line: int) -> list[RecordError]:
    """pydantic's errors as one `RecordError` per field, worded for people."""
    return [RecordError(source, line, _field_name(err["loc"]), _reason(err)) for err in exc.errors()]


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<record>"


def _reason(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    return re.sub(r"^Value error, ", "", str(err["msg"]))
