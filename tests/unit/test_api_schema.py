"""The OpenAPI schema describes what handlers validate themselves (no service needed)."""

from __future__ import annotations

from litestar import Litestar, post

from server.api import ArticlePush
from server.schema import ClosedModels


@post("/push", sync_to_thread=False)
def push(data: ArticlePush) -> int:
    return len(data.articles)


def test_pushed_articles_are_described_as_articles_not_free_form_objects() -> None:
    schema = Litestar([push], plugins=[ClosedModels()]).openapi_schema.to_schema()
    components = schema["components"]["schemas"]
    articles = components["ArticlePush"]["properties"]["articles"]
    assert articles["items"] == {"$ref": "#/components/schemas/Article"}
    assert (articles["minItems"], articles["maxItems"]) == (1, 1000)
    article = components["Article"]
    assert article["additionalProperties"] is False
    assert {"id", "url", "title", "body", "section", "language", "publication", "published_at"} <= set(
        article["required"]
    )
