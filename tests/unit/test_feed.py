"""The ad feed contract (issue 26): CSV / JSONL / parquet, strict one-line errors naming file, row and
field, ads outside the click catalog, and the refresh dataset (catalog + new ads, same interactions)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hllm_creator.data.feed import feed_items, load_feed, refresh_dataset
from hllm_creator.data.schema import DataError

CATALOG = pd.DataFrame({
    "item_id": ["A1", "A2"],
    "title": ["Nitrile Gloves, 100 Pack", "Digital Caliper 6 Inch"],
    "description": ["Powder free gloves.", ""],
    "brand": ["Acme", None],
    "categories": [["Safety", "Gloves"], ["Tools"]],
    "selling_points": [["Powder free"], ["Stainless steel"]],
})


def _csv(tmp_path, text, name="feed.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_jsonl_parquet_read_the_same(tmp_path):
    rows = [{"ad_id": "N1", "title": "Lab Timer with Alarm", "description": "Counts up and down.",
             "selling_points": ["Loud alarm", "Magnetic back"], "brand": "Tick", "categories": ["Lab", "Timers"]},
            {"ad_id": "N2", "title": "Glass Beaker Set 5 Pieces"}]
    csv = _csv(tmp_path, "ad_id,title,description,selling_points,brand,categories\n"
                         "N1,Lab Timer with Alarm,Counts up and down.,Loud alarm|Magnetic back,Tick,Lab|Timers\n"
                         "N2,Glass Beaker Set 5 Pieces,,,,\n")
    jl = tmp_path / "feed.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq = tmp_path / "feed.parquet"
    pd.DataFrame(rows).to_parquet(pq)
    got = [load_feed(p, CATALOG) for p in (csv, jl, pq)]
    for g in got:
        assert g["ad_id"].tolist() == ["N1", "N2"]
        assert g.loc[0, "selling_points"] == ["Loud alarm", "Magnetic back"]  # the advertiser's, kept as given
        assert bool(g.loc[0, "advertiser_selling_points"]) and not bool(g.loc[1, "advertiser_selling_points"])
        assert g.loc[0, "categories"] == ["Lab", "Timers"] and g.loc[0, "brand"] == "Tick"
        assert not g["in_catalog"].any()
    items = feed_items(got[0])
    assert items["item_id"].tolist() == ["N1", "N2"] and set(items.columns) >= {"title", "selling_points"}


def test_missing_title_names_file_row_and_field(tmp_path):
    p = _csv(tmp_path, "ad_id,title\nN1,Lab Timer with Alarm\nN2,\n")
    with pytest.raises(DataError) as e:
        load_feed(p)
    msg = str(e.value)
    assert "missing title" in msg and f"file {p}" in msg and "row 1" in msg and "column title" in msg
    assert "\n" not in msg


def test_duplicate_ad_id_names_file_row_and_field(tmp_path):
    p = tmp_path / "feed.jsonl"
    p.write_text('{"ad_id": "N1", "title": "Lab Timer with Alarm"}\n{"ad_id": "N2", "title": "Beaker Set"}\n'
                 '{"ad_id": "N1", "title": "Another Timer"}\n')
    with pytest.raises(DataError) as e:
        load_feed(p)
    msg = str(e.value)
    assert "duplicate ad_id 'N1' (first at row 0)" in msg and f"file {p}" in msg and "row 2" in msg
    assert "column ad_id" in msg and "\n" not in msg


def test_catalog_collision_with_different_text_is_refused(tmp_path):
    pq = tmp_path / "feed.parquet"
    pd.DataFrame([{"ad_id": "N9", "title": "Beaker"},
                  {"ad_id": "A2", "title": "Digital Caliper 8 Inch"}]).to_parquet(pq)
    with pytest.raises(DataError) as e:
        load_feed(pq, CATALOG)
    msg = str(e.value)
    assert "ad_id 'A2' is a catalog item with a different title" in msg and "Digital Caliper 6 Inch" in msg
    assert f"file {pq}" in msg and "row 1" in msg and "column title" in msg and "\n" not in msg
    # different advertiser selling points for a catalog id: refused too (field selling_points)
    p = _csv(tmp_path, "ad_id,title,description,brand,categories,selling_points\n"
                       "A1,\"Nitrile Gloves, 100 Pack\",Powder free gloves.,Acme,Safety|Gloves,Latex free\n")
    with pytest.raises(DataError, match=r"different selling_points.*row 0"):
        load_feed(p, CATALOG)


def test_same_text_collision_is_the_catalog_item(tmp_path):
    p = _csv(tmp_path, "ad_id,title,description,brand,categories\n"
                       "A1,\"Nitrile Gloves, 100 Pack\",Powder free gloves.,Acme,Safety|Gloves\n"
                       "N1,Lab Timer with Alarm,,,\n")
    f = load_feed(p, CATALOG)
    assert f["in_catalog"].tolist() == [True, False]
    assert f.loc[0, "selling_points"] == ["Powder free"]  # the catalog's record
    assert feed_items(f)["item_id"].tolist() == ["N1"]


@pytest.mark.parametrize("text,match", [
    ("ad_id,title,colour\nN1,Timer,red\n", r"unknown column 'colour'.*column colour"),
    ("ad_id,description\nN1,x\n", r"missing column 'title'"),
    ("ad_id,title\n,Timer\n", r"missing ad_id.*row 0, column ad_id|missing ad_id.*column ad_id, row 0"),
    ("ad_id,title\n", r"no rows"),
])
def test_other_feed_errors(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        load_feed(_csv(tmp_path, text))


def test_list_of_non_strings_and_unsupported_type(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text('{"ad_id": "N1", "title": "Timer", "categories": ["Lab", 3]}\n')
    with pytest.raises(DataError, match=r"non-empty strings.*column categories, row 0"):
        load_feed(p)
    q = tmp_path / "f.xlsx"
    q.write_text("x")
    with pytest.raises(DataError, match="unsupported ad feed type"):
        load_feed(q)


def test_refresh_dataset_adds_ads_without_clicks(tmp_path, infer_workflow):
    from hllm_creator.data import load_dataset

    data, _ = infer_workflow
    ds = load_dataset(data)
    some = ds.items.iloc[0]
    p = tmp_path / "feed.jsonl"
    p.write_text(json.dumps({"ad_id": "NEW-1", "title": "Adjustable Lab Stand with Clamp",
                             "selling_points": ["Rust resistant"]}) + "\n"
                 + json.dumps({"ad_id": str(some["item_id"]), "title": str(some["title"]),
                               "description": str(some["description"] or ""), "brand": some["brand"],
                               "categories": list(some["categories"])}) + "\n")
    out, feed = refresh_dataset(data, p, tmp_path / "ds")
    again = load_dataset(tmp_path / "ds")
    assert len(again.items) == len(ds.items) + 1 and len(again.interactions) == len(ds.interactions)
    new = again.items[again.items["item_id"] == "NEW-1"].iloc[0]
    assert list(new["selling_points"]) == ["Rust resistant"]
    assert "NEW-1" not in set(again.interactions["item_id"])
    assert feed["in_catalog"].tolist() == [False, True]
    assert "+feed-" in again.name
