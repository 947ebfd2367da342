"""Click-log readers on tiny files written by the tests themselves."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from recsys.datasets import load_logs

NEWS = (
    "N1\tsports\tfootball\tClub wins\tA late goal.\t\t[]\t[]\n"
    "N2\tnews\tlocal\tBridge shut\tRepairs.\t\t[]\t[]\n"
)


def test_mind_with_impressions_jsonl(tmp_path: Path) -> None:
    (tmp_path / "news.tsv").write_text(NEWS)
    row = {
        "impression_id": 7,
        "variant": "v/cold_user",
        "history": ["N1"],
        "candidates": ["N2", "N1"],
        "labels": [1, 0],
    }
    (tmp_path / "impressions.jsonl").write_text(json.dumps(row) + "\n")
    logs = load_logs(tmp_path)
    assert logs.source == "mind" and [a.id for a in logs.articles] == ["N1", "N2"]
    [imp] = logs.impressions
    assert (imp.impression_id, imp.variant, imp.candidates, imp.labels) == (
        7,
        "v/cold_user",
        ("N2", "N1"),
        (1, 0),
    )


def test_mind_behaviors_tsv_with_times(tmp_path: Path) -> None:
    (tmp_path / "news.tsv").write_text(NEWS)
    (tmp_path / "behaviors.tsv").write_text("3\tU1\t11/12/2019 2:14:46 PM\tN1\tN2-1 N1-0\n")
    [imp] = load_logs(tmp_path).impressions
    assert imp.at is not None and imp.at.hour == 14 and imp.history == (("N1", None),)
    assert imp.labels == (1, 0)


def test_ebnerd_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is needed for EB-NeRD parquet")
    import pyarrow.parquet as pq

    t0 = datetime(2023, 5, 18, 7, 0)
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"article_id": 1, "title": "Kamp", "subtitle": "Sejr", "body": "Holdet vandt.",
                 "category_str": "sport", "topics": ["Fodbold"], "published_time": t0},
                {"article_id": 2, "title": "Vejarbejde", "subtitle": "", "body": "Broen lukker.",
                 "category_str": "nyheder", "topics": [], "published_time": t0},
            ]
        ),
        tmp_path / "articles.parquet",
    )  # fmt: skip
    (tmp_path / "train").mkdir()
    pq.write_table(
        pa.Table.from_pylist(
            [{"impression_id": 5, "user_id": 9, "impression_time": datetime(2023, 5, 18, 9, 0),
              "article_ids_inview": [1, 2], "article_ids_clicked": [2]}]
        ),
        tmp_path / "train" / "behaviors.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.Table.from_pylist(
            [{"user_id": 9, "article_id_fixed": [1], "impression_time_fixed": [datetime(2023, 5, 18, 8, 0)]}]
        ),
        tmp_path / "train" / "history.parquet",
    )  # fmt: skip
    logs = load_logs(tmp_path)
    assert logs.source == "ebnerd" and {a.section for a in logs.articles} == {"sport", "nyheder"}
    [imp] = logs.impressions
    assert imp.candidates == ("1", "2") and imp.labels == (0, 1)
    assert imp.history[0][0] == "1" and imp.at is not None and imp.at.hour == 9


def test_unknown_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither MIND"):
        load_logs(tmp_path)
