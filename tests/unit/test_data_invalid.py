"""issue 28: `data prepare --on-invalid skip`: a real Amazon pair (a slice of the bundled 5-core data in
the same .inter.json/.item.json format) with 3 empty titles. Strict by default, the error naming the
option; skip drops them (and their interactions), lists each (file, row, why) in the manifest and in
an MLflow run; more invalid rows than --max-invalid is an error."""

from __future__ import annotations

import gzip
import json

import mlflow
from typer.testing import CliRunner

from hllm_creator.cli import app
from hllm_creator.data.schema import load_dataset
from hllm_creator.paths import BUNDLED_DATA

EMPTY = 3


def _amazon_pair(tmp_path, users: int = 400, empty: int = EMPTY):
    items = json.loads(gzip.open(BUNDLED_DATA / "Scientific.item.json.gz", "rt").read())
    inter = json.loads(gzip.open(BUNDLED_DATA / "Scientific.inter.json.gz", "rt").read())
    inter = dict(list(inter.items())[:users])
    used = {str(i) for seq in inter.values() for i in seq}  # ids are ints in inter.json
    items = {k: v for k, v in items.items() if k in used}
    blanked = list(items)[5:5 + empty]
    for k in blanked:
        items[k] = {**items[k], "title": "  "}
    (tmp_path / "Cat.item.json").write_text(json.dumps(items))
    (tmp_path / "Cat.inter.json").write_text(json.dumps(inter))
    rows = [list(items).index(k) for k in blanked]
    n_inter = sum([str(i) for i in seq].count(k) for seq in inter.values() for k in blanked)
    return tmp_path / "Cat.inter.json", tmp_path / "Cat.item.json", rows, blanked, n_inter, len(items)


def test_strict_default_names_the_option_and_skip_lists_each_dropped_row(tmp_path):
    inter, item, rows, blanked, n_inter, n_items = _amazon_pair(tmp_path)
    run = CliRunner().invoke
    out = tmp_path / "ds"
    r = run(app, ["data", "prepare", "--inter", str(inter), "--item", str(item), "--out", str(out)])
    assert r.exit_code != 0 and not out.exists()
    msg = str(r.exception)
    assert f"empty string (file {item}, column title, row {rows[0]})" in msg and "--on-invalid skip" in msg, msg

    r = run(app, ["data", "prepare", "--inter", str(inter), "--item", str(item), "--out", str(out),
                  "--on-invalid", "skip"])
    assert r.exit_code == 0, r.output
    ds = load_dataset(out)
    inv = ds.manifest["invalid_rows"]
    assert inv["count"] == EMPTY and inv["policy"] == "skip" and inv["max_invalid"] == 100
    assert [(d["file"], d["row"], d["column"], d["why"], d["id"]) for d in inv["rows"]] == [
        (str(item), row, "title", "empty string", k) for row, k in zip(rows, blanked)]
    assert inv["interactions_with_dropped_items"] == n_inter > 0
    assert len(ds.items) == n_items - EMPTY and not ds.items["item_id"].isin(blanked).any()
    assert not ds.interactions["item_id"].isin(blanked).any()
    assert "skipped 3 invalid rows" in r.output
    # the same list in MLflow: a data-prepare run with the table and the count
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.step = 'data-prepare'")
    assert len(runs) == 1 and runs.iloc[0]["metrics.invalid_rows_dropped"] == EMPTY
    table = mlflow.artifacts.load_dict(runs.iloc[0]["artifact_uri"] + "/invalid_rows.json")
    assert sorted(r[1] for r in table["data"]) == sorted(rows)


def test_more_invalid_rows_than_the_limit_is_an_error(tmp_path):
    inter, item, rows, *_ = _amazon_pair(tmp_path)
    out = tmp_path / "ds"
    r = CliRunner().invoke(app, ["data", "prepare", "--inter", str(inter), "--item", str(item), "--out", str(out),
                                 "--on-invalid", "skip", "--max-invalid", "2", "--no-mlflow"])
    assert r.exit_code != 0 and not out.exists()
    assert "3 invalid rows, more than --max-invalid 2" in str(r.exception)
    assert f"row {rows[0]} column title: empty string" in str(r.exception)


def test_drop_invalid_rows_covers_the_schema_rules():
    import pandas as pd

    from hllm_creator.data.adapters import drop_invalid_rows

    items = pd.DataFrame({"item_id": ["a", "b", "a", None, "c"], "title": ["A", "B", "dup", "x", None],
                          "description": ["", "", "", "", ""], "brand": [None] * 5,
                          "categories": [[], [], [], [], ["ok"]]})
    inter = pd.DataFrame({"user_id": ["u", "u", "", "v", "v"], "item_id": ["a", "c", "a", "zz", "b"],
                          "ts": [0, 1, 2, 3, 4.5], "label": [1, 1, 1, 1, 1]})
    it, ia, dropped = drop_invalid_rows(items, inter, items_file="I", interactions_file="X")
    assert it["item_id"].tolist() == ["a", "b"]
    why = {(d["file"], d["row"]): (d["column"], d["why"]) for d in dropped}
    assert why[("I", 2)][0] == "item_id" and "duplicate" in why[("I", 2)][1]
    assert why[("I", 3)] == ("item_id", "missing value") and why[("I", 4)] == ("title", "missing value")
    assert why[("X", 2)] == ("user_id", "empty string") and "unknown item" in why[("X", 3)][1]
    assert why[("X", 4)][0] == "ts"
    assert ia.to_dict("records") == [{"user_id": "u", "item_id": "a", "ts": 0, "label": 1}]
    assert [d for d in dropped if d["row"] == 4 and d["file"] == "I"][0]["interactions"] == 1  # u's click on c
