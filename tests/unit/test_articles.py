from __future__ import annotations

from datetime import UTC, datetime

import pytest

from indexing import Article, RecordError, validate_record
from tests.factories import make_article


def valid_raw(**changes: object) -> dict[str, object]:
    raw = make_article().model_dump(mode="json")
    raw.update(changes)
    return raw


def errors_of(raw: object) -> list[RecordError]:
    result = validate_record(raw, "feed.jsonl", 7)
    assert isinstance(result, list), f"expected errors, got {result!r}"
    return result


def test_valid_record_becomes_article() -> None:
    article = validate_record(valid_raw(section=" Sport ", tags=["A", "a", "b"]), "f", 1)
    assert isinstance(article, Article)
    assert article.section == "sport"
    assert article.tags == ["a", "b"]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"title": ""}, "title", "at least 1 character"),
        ({"url": "not a url"}, "url", "URL"),
        ({"published_at": "2026-11-16T08:00:00"}, "published_at", "timezone"),
        ({"language": "english"}, "language", "pattern"),
        ({"section": "Sport & Leisure"}, "section", "pattern"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"id": "has spaces"}, "id", "pattern"),
        ({"updated_at": "2026-11-15T08:00:00+00:00"}, "<record>", "earlier than published_at"),
    ],
)
def test_malformed_field_is_named_with_reason(change: dict[str, object], field: str, reason: str) -> None:
    [error] = errors_of(valid_raw(**change))
    assert (error.source, error.line, error.field) == ("feed.jsonl", 7, field)
    assert reason in error.reason
    assert str(error).startswith(f"feed.jsonl:7: {field}: ")


def test_missing_field_and_wrong_type() -> None:
    raw = valid_raw(tags="sport")
    del raw["body"]
    fields = {e.field: e.reason for e in errors_of(raw)}
    assert fields["body"] == "required field is missing"
    assert "list" in fields["tags"]


def test_non_object_record() -> None:
    [error] = errors_of(["not", "an", "object"])
    assert "expected a JSON object" in error.reason


def test_content_hash_ignores_updated_at_but_not_text() -> None:
    base = make_article()
    republished = make_article(updated_at=datetime(2026, 11, 17, tzinfo=UTC))
    edited = make_article(body=base.body + " A new fact.")
    assert base.content_hash() == republished.content_hash()
    assert base.content_hash() != edited.content_hash()


def test_markup_is_reduced_to_text_and_the_original_kept_for_editors() -> None:
    title = 'Fire at <b>Nordkaia</b> <img src=x onerror="alert(1)">quay &amp; pier'
    body = "<p>First paragraph.</p><script>steal()</script><p>Second &#8211; one.</p>"
    article = validate_record(valid_raw(title=title, body=body), "push", 1)
    assert isinstance(article, Article)
    assert article.title == "Fire at Nordkaia quay & pier"
    assert article.body == "First paragraph.\n\nSecond \u2013 one."
    assert article.original_html == {"title": title, "body": body}
    assert "<" not in article.text_for_embedding()


def test_plain_text_with_angle_brackets_and_ampersands_is_left_alone() -> None:
    article = validate_record(valid_raw(title="Q&A: is 5 < 6 > 4?", body="R&D rose by 3 <4%"), "f", 1)
    assert isinstance(article, Article)
    assert (article.title, article.body, article.original_html) == (
        "Q&A: is 5 < 6 > 4?",
        "R&D rose by 3 <4%",
        {},
    )


def test_markup_survives_a_round_trip_through_the_index_payload() -> None:
    article = validate_record(valid_raw(lead="<em>Lead</em> text"), "f", 1)
    assert isinstance(article, Article)
    again = Article.model_validate(article.model_dump(mode="json"))
    assert again == article
    assert again.lead == "Lead text"
    assert again.original_html == {"lead": "<em>Lead</em> text"}
    # The markup is not content: the same text without it needs no re-index.
    assert again.content_hash() == validate_record(valid_raw(lead="Lead text"), "f", 1).content_hash()  # type: ignore[union-attr]


def test_a_title_that_is_only_markup_is_rejected() -> None:
    assert [e.field for e in errors_of(valid_raw(title="<img src=x onerror=alert(1)>"))] == ["title"]
