"""Bad input for every source: reported with where and why, the rest still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexing import Article, RecordError, html_to_text, open_source, read_feed, read_jsonl, read_mind_news
from indexing.sources import SourceUnavailable
from tests.factories import make_article

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Havnby Test Feed</title><language>en-gb</language>
<item><guid>urn:test:1</guid><title>Harbour &amp; bridge reopen</title>
<link>https://feed.example/1</link><pubDate>Mon, 16 Nov 2026 08:00:00 +0100</pubDate>
<description>&lt;p&gt;The bridge is open.&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;
&lt;p&gt;Cars may cross.&lt;/p&gt;</description>
</item>
<item><guid>urn:test:2</guid><title>No link and no date</title><description>text</description></item>
</channel></rss>"""


def test_jsonl_reports_each_bad_line_and_keeps_the_rest(tmp_path: Path) -> None:
    good = make_article("ok-1").model_dump_json()
    bad_field = json.dumps({**make_article("ok-2").model_dump(mode="json"), "url": "ftp:/x"})
    path = tmp_path / "day.jsonl"
    path.write_text(f"{good}\n{{not json\n\n{bad_field}\n[1, 2]\n")
    records = list(read_jsonl(path))
    assert [r.id for r in records if isinstance(r, Article)] == ["ok-1"]
    errors = [r for r in records if isinstance(r, RecordError)]
    assert [(e.line, e.field) for e in errors] == [(2, "<record>"), (4, "url"), (5, "<record>")]
    assert "invalid JSON" in errors[0].reason
    assert all(e.source == str(path) for e in errors)


def test_rss_feed_becomes_plain_text_articles(tmp_path: Path) -> None:
    path = tmp_path / "feed.rss"
    path.write_text(RSS)
    records = list(read_feed(str(path), section="local"))
    article = records[0]
    assert isinstance(article, Article)
    assert article.title == "Harbour & bridge reopen"
    assert article.body == "The bridge is open.\n\nCars may cross."
    assert article.publication == "Havnby Test Feed" and article.language == "en"
    assert article.published_at.isoformat() == "2026-11-16T07:00:00+00:00"
    errors = {r.field for r in records[1:] if isinstance(r, RecordError)}
    assert errors == {"url", "published_at"}
    assert all(isinstance(r, RecordError) and r.line == 2 for r in records[1:])


def test_feed_from_a_url(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    (tmp_path / "feed.rss").write_text(RSS)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        records = list(open_source(f"{base}/feed.rss"))
        assert isinstance(records[0], Article) and records[0].title == "Harbour & bridge reopen"
        with pytest.raises(SourceUnavailable, match="HTTP 404"):
            list(open_source(f"{base}/missing.rss"))
    finally:
        server.shutdown()


def test_unreadable_feed_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.xml"
    path.write_text("<rss><channel><item><title>unclosed")
    [error] = list(read_feed(str(path)))
    assert isinstance(error, RecordError) and error.field == "<feed>"
    assert "unreadable feed" in error.reason


def test_mind_news_rows(tmp_path: Path) -> None:
    path = tmp_path / "news.tsv"
    rows = [
        "N1\tsports\tfootball\tClub wins\tA late goal.\thttps://m.example/N1\t[]\t[]",
        "N2\tnews\tlocal\t\t\thttps://m.example/N2\t[]\t[]",
        "N3\tbroken row",
    ]
    path.write_text("\n".join(rows) + "\n")
    records = list(read_mind_news(path))
    assert isinstance(records[0], Article) and records[0].body == "A late goal."
    errors = {(r.line, r.field): r.reason for r in records[1:] if isinstance(r, RecordError)}
    assert set(errors) == {(2, "title"), (2, "body"), (3, "<record>")}
    assert "tab-separated" in errors[(3, "<record>")]


def test_open_source_dispatch_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(make_article("x-1").model_dump_json() + "\n")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [r.id for r in open_source(str(tmp_path)) if isinstance(r, Article)] == ["x-1"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown source type"):
        list(open_source(str(tmp_path / "notes.txt")))


def test_html_to_text_drops_scripts_and_keeps_paragraphs() -> None:
    html = "<h1>Head</h1><p>One &amp; <b>two</b></p><style>p{}</style><script>x()</script><p>three</p>"
    assert html_to_text(html) == "Head\n\nOne & two\n\nthree"
