"""GSB: the paper's counts, the interval, order-flip rule, input handling and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hllm_creator.data.schema import DataError
from hllm_creator.teacher.gsb import GSBConfig, final_verdict, gsb_stats, load_samples, parse_counts, write_outputs

BIN = Path(sys.executable).parent


def test_paper_counts_give_59_4_percent():
    s = gsb_stats(353, 91, 56)
    assert s["adv_pct"] == 59.4 and abs(s["adv"] - 297 / 500) < 1e-12 and s["n"] == 500
    assert s["ci_low"] < s["adv"] < s["ci_high"]
    # normal-approximation width of (G-B)/n for these counts is about +-0.06
    assert 0.04 < s["adv"] - s["ci_low"] < 0.08 and 0.04 < s["ci_high"] - s["adv"] < 0.08
    assert gsb_stats(353, 91, 56, seed=1)["adv"] == s["adv"]


def test_interval_degenerate_and_errors():
    s = gsb_stats(10, 0, 0)
    assert s["adv"] == 1.0 and s["ci_low"] == s["ci_high"] == 1.0
    with pytest.raises(ValueError, match="G \\+ S \\+ B = 0"):
        gsb_stats(0, 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        gsb_stats(-1, 2, 3)
    with pytest.raises(ValueError, match="G,S,B"):
        parse_counts("353,91")
    assert parse_counts(" 353, 91 ,56") == (353, 91, 56)


@pytest.mark.parametrize("ab,ba,final", [("a", "b", "G"), ("b", "a", "B"), ("a", "a", "S"), ("b", "b", "S"),
                                         ("same", "b", "S"), ("a", None, "S"), ("same", "same", "S")])
def test_both_orders_flip_counts_as_same(ab, ba, final):
    assert final_verdict(ab, ba) == final


def test_cli_counts(tmp_path):
    out = subprocess.run([str(BIN / "hllm-creator"), "gsb", "--counts", "353,91,56", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Adv=59.4%" in out.stdout
    summ = json.loads((tmp_path / "gsb_summary.json").read_text())
    assert summ["G"] == 353 and (tmp_path / "gsb.png").stat().st_size > 1000
    bad = subprocess.run([str(BIN / "hllm-creator"), "gsb", "--counts", "1,2"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "G,S,B" in bad.stderr


def test_input_errors_name_file_and_column(tmp_path):
    p = tmp_path / "s.parquet"
    pd.DataFrame({"title_a": ["x"], "original_title": ["y"]}).assign(title_b=[""]).to_parquet(p)
    with pytest.raises(DataError, match="title_b.*row 0|column title_b"):
        load_samples(GSBConfig(input=str(p)))
    pd.DataFrame({"foo": [1]}).to_parquet(p)
    with pytest.raises(DataError, match="missing column"):
        load_samples(GSBConfig(input=str(p)))
    with pytest.raises(DataError, match="not found"):
        load_samples(GSBConfig(input=str(tmp_path / "nope.parquet")))


def test_construct_output_is_accepted_as_input(tmp_path):
    p = tmp_path / "train.parquet"
    pd.DataFrame({"user_id": ["u1"], "original_title": ["Glass Beaker 250 ml"], "original_description": ["d"],
                  "response": ["Glass Beaker 250 ml for Your Lab"], "title_list": [["Pipette"]],
                  "user_profile": ['{"description": "lab work"}']}).to_parquet(p)
    df = load_samples(GSBConfig(input=str(p)))
    assert df.loc[0, "title_a"] == "Glass Beaker 250 ml for Your Lab" and df.loc[0, "title_b"] == "Glass Beaker 250 ml"
    assert df.loc[0, "sample"] == "u1" and df.loc[0, "title_list"] == ["Pipette"]


def test_creatives_input_needs_dataset_and_joins_ad_text(tmp_path, bundled_dataset):
    p = tmp_path / "creatives.parquet"
    item = bundled_dataset.items.iloc[0]
    pd.DataFrame({"item_id": [item["item_id"]], "cluster_id": [0], "original_title": [item["title"]],
                  "llm_output": [item["title"] + " for You"], "score": [0.9]}).to_parquet(p)
    with pytest.raises(DataError, match="--data"):
        load_samples(GSBConfig(input=str(p)))
    asg = tmp_path / "assignments.parquet"
    uid = bundled_dataset.interactions["user_id"].iloc[0]
    pd.DataFrame({"user_id": [uid, "zz"], "cluster_id": [0, 0], "distance": [0.1, 0.5]}).to_parquet(asg)
    df = load_samples(GSBConfig(input=str(p), data=str(bundled_dataset.path), assignments=str(asg)))
    assert df.loc[0, "sample"] == f"{item['item_id']}:0" and df.loc[0, "user_id"] == uid
    assert df.loc[0, "original_description"] == item["description"] and df.loc[0, "title_b"] == item["title"]


def test_write_outputs(tmp_path):
    s = gsb_stats(5, 3, 2)
    v = pd.DataFrame({"sample": ["1"], "verdict_ab": ["a"], "verdict_ba": ["b"], "final": ["G"]})
    write_outputs(v, s, tmp_path / "o")
    assert pd.read_parquet(tmp_path / "o" / "gsb.parquet")["final"].tolist() == ["G"]
    assert json.loads((tmp_path / "o" / "gsb_summary.json").read_text())["adv"] == pytest.approx(0.3)


def test_empty_creative_outputs_are_counted_not_judged(tmp_path, bundled_dataset):
    # seen in the demo: the Creative LLM wrote nothing for one pair (generate fell back to the
    # original title); gsb-eval must judge the others and report the skipped row, not crash
    p = tmp_path / "creatives.parquet"
    items = bundled_dataset.items.iloc[:3]
    pd.DataFrame({"item_id": items["item_id"].tolist(), "cluster_id": [0, 1, 2],
                  "original_title": items["title"].tolist(),
                  "llm_output": [items["title"].iloc[0] + " for You", "", items["title"].iloc[2]],
                  "score": [0.9, 0.8, 0.7]}).to_parquet(p)
    df = load_samples(GSBConfig(input=str(p), data=str(bundled_dataset.path)))
    # row 3's output IS the original title: served, but not personalized, so not judged either
    assert df["sample"].tolist() == [f"{items['item_id'].iloc[0]}:0"]
    assert df.attrs["skipped_empty_llm_output"] == 1 and df.attrs["not_personalized"] == 1
    pd.DataFrame({"item_id": items["item_id"].tolist()[:1], "cluster_id": [0],
                  "original_title": items["title"].tolist()[:1], "llm_output": ["  "],
                  "score": [0.9]}).to_parquet(p)
    with pytest.raises(DataError, match="every llm_output is empty"):
        load_samples(GSBConfig(input=str(p), data=str(bundled_dataset.path)))


def test_only_served_titles_that_differ_from_the_original_are_judged(tmp_path, bundled_dataset):
    """Deliverable 6: the judge sees the SERVED title (creatives `title`), never an llm_output that
    fell back; a served copy of the original (after normalization) is counted, not judged."""
    from hllm_creator.teacher.gsb import run_gsb

    p = tmp_path / "creatives.parquet"
    items = bundled_dataset.items.iloc[:4]
    t = items["title"].tolist()
    pd.DataFrame({"item_id": items["item_id"].tolist(), "cluster_id": [0, 1, 2, 3], "original_title": t,
                  "llm_output": [t[0] + " for Labs", "3D PLA PLA PLA", t[2] + " Pro", "x"],
                  "grounded": [True, False, True, True],
                  "title": [t[0] + " for Labs", t[1], "  " + t[2].upper() + "!", t[3] + " Kit"],
                  "score": [0.9, 0.8, 0.7, 0.6]}).to_parquet(p)
    df = load_samples(GSBConfig(input=str(p), data=str(bundled_dataset.path)))
    assert df["title_a"].tolist() == [t[0] + " for Labs", t[3] + " Kit"]  # the served titles, not llm_output
    assert df.attrs["not_personalized"] == 2 and df.attrs["served_rows"] == 4
    # without a title column: llm_output where grounded, else the original (served) -> not judged
    pd.read_parquet(p).drop(columns="title").to_parquet(p)
    df = load_samples(GSBConfig(input=str(p), data=str(bundled_dataset.path)))
    assert df["title_a"].tolist() == [t[0] + " for Labs", t[2] + " Pro", "x"]
    assert "3D PLA PLA PLA" not in df["title_a"].tolist() and df.attrs["not_personalized"] == 1
    # every served title is the original: nothing judged (no judge needed), no evidence either way
    pd.DataFrame({"item_id": items["item_id"].tolist()[:2], "cluster_id": [0, 1], "original_title": t[:2],
                  "llm_output": ["a", "b"], "grounded": [False, False], "title": t[:2]}).to_parquet(p)
    verdicts, summary = run_gsb(GSBConfig(input=str(p), data=str(bundled_dataset.path)), client=object())
    assert len(verdicts) == 0 and summary["n"] == 0 and summary["ci_low"] == 0.0
    assert summary["not_personalized"] == 2 and summary["personalized_share"] == 0.0


def test_a_reply_cut_after_its_verdict_counts_a_rambling_one_does_not():
    """The demo's 135M judge rambles in its reason past max_tokens: the verdict, asked for first and
    complete, counts (its reason is marked lost); a cut reply without a complete verdict, or a reply
    that is invalid for another reason, stays a judge failure."""
    from hllm_creator.llm.client import Result
    from hllm_creator.teacher.gsb import CUT_REASON, judge_verdict

    cut = " (cut at max_tokens=64; not re-asked: raise max_tokens)"
    raw = '{\n  "verdict": "a"\n\n,\n"reason": "The ad does not have a title that states facts the ad does not'
    assert judge_verdict(Result(tag=0, ok=False, raw=raw, error="invalid reply: reply is not JSON" + cut)) \
        == ("a", CUT_REASON)
    assert judge_verdict(Result(tag=0, ok=False, raw='{"verdict": "sa', error="not JSON" + cut)) \
        == (None, "not JSON" + cut)
    assert judge_verdict(Result(tag=0, ok=False, raw=raw, error="invalid reply: reply is not JSON"))[0] is None
    assert judge_verdict(Result(tag=0, ok=True, value={"verdict": "same", "reason": "r"})) == ("same", "r")
