"""Test data builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from indexing import Article


def make_article(id: str = "a-1", **overrides: Any) -> Article:
    """A valid article; override any field."""
    published = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": id,
        "url": f"https://news.example/{id}",
        "title": f"Title of {id}",
        "lead": "A short lead.",
        "body": "The body of the article says something specific. " * 5,
        "section": "local",
        "tags": ["test"],
        "language": "en",
        "publication": "Test Post",
        "published_at": published,
    }
    fields.update(overrides)
    if isinstance(fields["published_at"], int):  # hours after day 1, for brevity
        fields["published_at"] = published + timedelta(hours=fields["published_at"])
    return Article.model_validate(fields)
