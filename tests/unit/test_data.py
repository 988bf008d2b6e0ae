"""Adapters, validation errors, the split, selling points, and the dataset-dir loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hllm_creator.data import adapters
from hllm_creator.data.prepare import prepare
from hllm_creator.data.schema import DataError, load_dataset
from hllm_creator.data.selling_points import derive_selling_points
from hllm_creator.data.split import leave_last_out


def test_bundled_counts_and_manifest(bundled_dataset):
    c = bundled_dataset.manifest["counts"]
    assert (c["users"], c["items"], c["interactions"]) == (8317, 4344, 58492)
    assert c["users_with_split"] == 8317
    m = bundled_dataset.manifest
    assert m["schema_version"] == 1 and set(m["sha256"]) == {"items.parquet", "interactions.parquet"}
    ds = load_dataset(bundled_dataset.path)
    assert len(ds.items) == 4344 and ds.interactions["label"].eq(1).all()
    # HTML entities are unescaped
    assert not ds.items["title"].str.contains("&amp;").any()
    assert not ds.items["description"].str.contains("&quot;|&amp;").any()
    # every item has selling points, all copied from its own text
    row = ds.items.set_index("item_id").loc["1"]
    assert row["selling_points"][-2:] == ["Brand: Stanley", "Category: Staples"]
    for sp in row["selling_points"][:-2]:
        assert sp in " ".join(row["description"].split())


def test_split_is_leave_last_out_and_deterministic(bundled_dataset):
    s1 = leave_last_out(bundled_dataset.interactions)
    s2 = leave_last_out(bundled_dataset.interactions.sample(frac=1.0, random_state=0))
    u0 = s1.users.set_index("user_id").loc["0"]
    assert u0["history"] == [str(i) for i in range(7)] and u0["valid_target"] == "7" and u0["test_target"] == "8"
    pd.testing.assert_frame_equal(s1.users.reset_index(drop=True), s2.users.reset_index(drop=True))


def test_split_orders_by_ts_and_reports_short_users():
    inter = pd.DataFrame({"user_id": ["a", "a", "a", "a", "b", "b"], "item_id": ["3", "1", "2", "4", "1", "2"],
                          "ts": [30, 10, 20, 20, 1, 2], "label": [1, 1, 1, 0, 1, 1]})
    s = leave_last_out(inter)
    assert s.too_short == ["b"]
    a = s.users.set_index("user_id").loc["a"]
    assert (a["history"], a["valid_target"], a["test_target"]) == (["1"], "2", "3")


def _items(**over):
    d = {"item_id": ["i1", "i2"], "title": ["Red pen", "Blue pen"], "description": ["A pen. It writes well in red ink.", ""],
         "brand": ["Acme", None], "categories": [["Office", "Pens"], []]}
    d.update(over)
    return pd.DataFrame(d)


def _inter(**over):
    d = {"user_id": ["u"] * 3, "item_id": ["i1", "i2", "i1"], "ts": [1, 2, 3], "label": [1, 1, 1]}
    d.update(over)
    return pd.DataFrame(d)


@pytest.mark.parametrize("items,inter,column,row,needle", [
    (_items(title=["Red pen", "  "]), _inter(), "title", 1, "empty"),
    (_items(item_id=["i1", "i1"]), _inter(), "item_id", 1, "duplicate"),
    (_items(), _inter(item_id=["i1", "zz", "i1"]), "item_id", 1, "unknown item"),
    (_items(), _inter(ts=[1, "x", 3]), "ts", 1, "integer"),
    (_items(), _inter(label=[1, 2, 1]), "label", 1, "not in"),
    (_items(title=["Red pen", 5]), _inter(), "title", 1, "string"),
])
def test_validation_errors_name_file_column_row(tmp_path, items, inter, column, row, needle):
    with pytest.raises(DataError) as e:
        prepare(items, inter, tmp_path / "ds", name="t", source="t", license="t", items_file="items.csv",
                interactions_file="inter.csv")
    assert e.value.column == column and e.value.row == row and needle in str(e.value)
    assert e.value.file in ("items.csv", "inter.csv") and e.value.file in str(e.value)
    assert not (tmp_path / "ds").exists()  # nothing half-written


def test_missing_column_named(tmp_path):
    with pytest.raises(DataError, match="missing column") as e:
        prepare(_items().drop(columns=["title"]), _inter(), tmp_path / "ds", name="t", source="t", license="t")
    assert e.value.column == "title"


def test_loader_detects_tampering(tmp_path):
    ds = prepare(_items(), _inter(), tmp_path / "ds", name="t", source="t", license="t")
    df = pd.read_parquet(ds.path / "items.parquet")
    df.loc[0, "title"] = "changed"
    df.to_parquet(ds.path / "items.parquet", index=False)
    with pytest.raises(DataError, match="checksum"):
        load_dataset(ds.path)
    with pytest.raises(DataError, match="manifest.json missing"):
        load_dataset(tmp_path)


def test_selling_points_rule():
    sp = derive_selling_points("Red pen", "Red pen. Writes smoothly on any paper. Made in a factory somewhere far away "
                               "with care. The country of origin is china. ok.", "Acme", ["Office", "Pens"])
    assert sp == ["Writes smoothly on any paper", "Made in a factory somewhere far away with care",
                  "Brand: Acme", "Category: Pens"]


def test_amazon_adapter_errors(tmp_path):
    (tmp_path / "x.inter.json").write_text("{not json")
    (tmp_path / "x.item.json").write_text(json.dumps({"0": {"title": "a"}}))
    with pytest.raises(DataError, match="invalid JSON") as e:
        adapters.amazon_json(tmp_path / "x.inter.json", tmp_path / "x.item.json")
    assert "x.inter.json" in str(e.value)


def test_reference_parquet_adapter(tmp_path):
    ref = pd.DataFrame({
        "user_profile": ["likes pens"], "original_title": ["Acme Gel Pen, 12 Pack"],
        "original_description": ["Smooth gel ink"], "prompt1": ["p1"], "prompt2": ["p2"], "response": ["r"],
        "title_list": [["Red pen", "Blue pen", "Notebook"]], "item_id_list": [["i1", "i2", "i3"]],
    })
    ref.to_parquet(tmp_path / "ref.parquet")
    items, inter = adapters.reference_parquet(tmp_path / "ref.parquet")
    ds = prepare(items, inter, tmp_path / "ds", name="ref", source="ref", license="t")
    assert ds.manifest["counts"] == {**ds.manifest["counts"], "users": 1, "items": 4, "interactions": 4}
    s = leave_last_out(ds.interactions).users.iloc[0]
    assert s["test_target"].startswith("t_") and s["valid_target"] == "i3"
    bad = ref.assign(title_list=[["only one"]])
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="title_list") as e:
        adapters.reference_parquet(tmp_path / "bad.parquet")
    assert e.value.row == 0


def _write_other_schema(tmp_path: Path) -> tuple[Path, Path]:
    pd.DataFrame({"asin": ["A1", "A2", "A3"], "name": ["Lab Beaker 250 mL", "Nitrile Gloves, Large (100 Count)",
                                                       "Digital Caliper 6-Inch"],
                  "blurb": ["Borosilicate glass.", "Powder free. Latex free.", ""],
                  "maker": ["Pyrex", "", "Neiko"], "cats": ["Lab|Glassware", "Safety|Gloves", "Tools"]}
                 ).to_csv(tmp_path / "products.csv", index=False)
    pd.DataFrame({"customer": ["c1", "c1", "c1", "c2", "c2", "c2"], "product": ["A1", "A2", "A3", "A3", "A2", "A1"],
                  "time": [5, 6, 7, 1, 2, 3]}).to_csv(tmp_path / "events.csv", index=False)
    return tmp_path / "products.csv", tmp_path / "events.csv"


def test_generic_csv_with_mapping_only(tmp_path):
    items_csv, events_csv = _write_other_schema(tmp_path)
    items, inter = adapters.generic(
        items_csv, events_csv,
        item_columns={"item_id": "asin", "title": "name", "description": "blurb", "brand": "maker", "categories": "cats"},
        interaction_columns={"user_id": "customer", "item_id": "product", "ts": "time"})
    ds = prepare(items, inter, tmp_path / "ds", name="csv", source="csv", license="t")
    assert ds.manifest["counts"]["users"] == 2 and ds.manifest["counts"]["items"] == 3
    it = ds.items.set_index("item_id")
    assert it.loc["A1", "categories"] == ["Lab", "Glassware"] and it.loc["A2", "brand"] is None
    with pytest.raises(DataError, match="missing column 'nope'") as e:
        adapters.generic(items_csv, events_csv, item_columns={"item_id": "nope"})
    assert e.value.file == str(items_csv)


def test_cli_generic_yaml_and_flags(tmp_path):
    items_csv, events_csv = _write_other_schema(tmp_path)
    (tmp_path / "map.yaml").write_text(
        "items:\n  path: products.csv\n  columns: {item_id: asin, title: name, description: blurb, brand: maker,"
        " categories: cats}\ninteractions:\n  path: events.csv\n  columns: {user_id: customer, item_id: product,"
        " ts: time}\nlist_sep: '|'\n")
    exe = [sys.executable, "-m", "hllm_creator.cli", "data", "prepare", "--source", "generic"]
    r = subprocess.run(exe + ["--mapping", str(tmp_path / "map.yaml"), "--out", str(tmp_path / "a")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 users, 3 items, 6 interactions" in r.stdout
    r = subprocess.run(exe + ["--items", str(items_csv), "--interactions", str(events_csv), "--out", str(tmp_path / "b"),
                              "--item-col", "item_id=asin", "--item-col", "title=name",
                              "--inter-col", "user_id=customer", "--inter-col", "item_id=product"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # bad input: clear one-line error, exit 2, nothing written
    r = subprocess.run(exe + ["--items", str(items_csv), "--interactions", str(events_csv), "--out", str(tmp_path / "c"),
                              "--item-col", "item_id=asin"], capture_output=True, text=True)
    assert r.returncode == 2 and "missing column 'title'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c").exists()


def _prepare(*args):
    """`hllm-creator data prepare ARGS` in-process (CliRunner): (exit code, output)."""
    from typer.testing import CliRunner

    from hllm_creator.cli import app

    r = CliRunner().invoke(app, ["data", "prepare", *args])
    return r.exit_code, r.output + (str(r.exception) if r.exception and not isinstance(r.exception, SystemExit) else "")


def test_mapping_without_source_prepares_the_mapped_data(tmp_path):
    """Issue 14 item 8: `--mapping` alone selects the generic source (it used to write the bundled data)."""
    items_csv, events_csv = _write_other_schema(tmp_path)
    (tmp_path / "map.yaml").write_text(
        "items:\n  path: products.csv\n  columns: {item_id: asin, title: name}\n"
        "interactions:\n  path: events.csv\n  columns: {user_id: customer, item_id: product, ts: time}\n")
    code, out = _prepare("--mapping", str(tmp_path / "map.yaml"), "--out", str(tmp_path / "x"))
    assert code == 0, out
    assert "2 users, 3 items, 6 interactions" in out
    assert load_dataset(tmp_path / "x").manifest["source"].startswith("generic")


@pytest.mark.parametrize("args,needle", [
    (["--source", "bundled", "--mapping", "m.yaml"], "--mapping does not apply to --source bundled"),
    (["--source", "amazon", "--inter", "a", "--item", "b", "--items", "c"], "--items does not apply to --source amazon"),
    (["--reference", "r.parquet", "--inter", "a"], "choose one with --source"),
    (["--name", "x"], "--name applies to"),
    (["--source", "nope"], "unknown --source"),
])
def test_an_option_that_does_not_apply_is_an_error(tmp_path, args, needle):
    code, out = _prepare(*args, "--out", str(tmp_path / "x"))
    assert code != 0 and needle in out, out
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("yaml_text,needle", [
    # the columns one level too high (the report in issue 14)
    ("items: {path: products.csv, item_id: asin, title: name}\ninteractions: {path: events.csv}\n",
     "unknown key 'items.item_id'; allowed under 'items': ['path', 'columns']; a column mapping belongs under "
     "'items.columns'"),
    ("items: {path: products.csv, columns: {item_id: asin, title: name}}\ninteractions: {path: events.csv}\n"
     "list_separator: '|'\n", "unknown key 'list_separator' at the top level"),
    ("items: {path: products.csv, columns: {item_id: asin, titel: name}}\ninteractions: {path: events.csv}\n",
     "unknown field(s) ['titel'] under 'items.columns'"),
])
def test_a_mapping_file_rejects_unknown_keys_naming_them(tmp_path, yaml_text, needle):
    (tmp_path / "map.yaml").write_text(yaml_text)
    with pytest.raises(DataError) as e:
        adapters.load_mapping_yaml(tmp_path / "map.yaml")
    assert needle in str(e.value) and e.value.file == str(tmp_path / "map.yaml")
    code, out = _prepare("--mapping", str(tmp_path / "map.yaml"), "--out", str(tmp_path / "x"))
    assert code != 0 and needle in out


def test_mapping_and_table_flags_together_are_an_error(tmp_path):
    items_csv, _ = _write_other_schema(tmp_path)
    (tmp_path / "map.yaml").write_text("items: {path: products.csv}\ninteractions: {path: events.csv}\n")
    code, out = _prepare("--mapping", str(tmp_path / "map.yaml"), "--items", str(items_csv),
                         "--out", str(tmp_path / "x"))
    assert code != 0 and "--mapping and --items both describe the tables" in out
