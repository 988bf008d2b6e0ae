"""construct and gsb against the real embedded SmolLM2 server (the root conftest.py ``llm_server``).

Small on purpose: SmolLM2 decodes ~16 tok/s on 2 free cores (much less on a shared machine).
Checks: every reference column written; kept rows pass the gate and add a word beyond the original;
rejected rows have a reason; a killed run restarted resumes from the cache without asking twice;
gsb writes both orders.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hllm_creator.teacher.construct import REFERENCE_COLUMNS

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
SMALL = ["--history-len", "3",
         "--concurrency", "2"]


def _env(base_url, model, tmp_path):
    env = os.environ.copy()
    env.update({"OPENAI_BASE_URL": base_url, "HLLM_TEACHER_MODEL": model, "OPENAI_API_KEY": "sk-test-not-logged"})
    return env


def test_construct_resume_and_gsb(tmp_path, bundled_dataset, llm_server):
    from hllm_creator.creative.gate import title_reasons
    from hllm_creator.teacher.construct import adds_content_word

    base_url, model = llm_server
    env = _env(base_url, model, tmp_path)
    cache = tmp_path / "cache.sqlite"
    out = tmp_path / "construct"
    cmd = [str(BIN / "hllm-creator"), "construct", "--data", str(bundled_dataset.path), "--out", str(out),
           "--ads", "2", "--users-per-fact", "1", "--candidate-users", "200", "--cache", str(cache), *SMALL]
    # 1. start, kill it once at least one reply is cached
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    import sqlite3

    t0 = time.time()
    cached = 0
    while time.time() - t0 < 900 and proc.poll() is None:
        time.sleep(2)
        if cache.exists():
            try:
                cached = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
            except sqlite3.OperationalError:
                cached = 0
            if cached >= 1:
                break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert cached >= 1, "no reply was cached before the kill"
    assert not (out / "train.parquet").exists(), "a killed run must not leave a half-written output"
    # 2. restart: the cached replies come back from the cache, the rest is asked
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["llm"]["llm_cache_hits"] >= cached
    assert f"({summary['llm']['llm_cache_hits']} from cache)" in done.stdout
    assert "sk-test-not-logged" not in done.stdout + done.stderr
    train = pd.read_parquet(out / "train.parquet")
    rej = pd.read_parquet(out / "rejected.parquet")
    assert list(train.columns[:len(REFERENCE_COLUMNS)]) == REFERENCE_COLUMNS
    assert len(train) >= 2 and summary["ads"] == 2 and summary["copy_rate"] == 0.0
    assert rej["reason"].map(lambda r: isinstance(r, str) and len(r) > 0).all()
    items = bundled_dataset.items.set_index("item_id")
    for row in train.to_dict("records"):
        item = items.loc[row["target_item_id"]].to_dict()
        assert title_reasons(row["response"], {**item, "item_id": row["target_item_id"]}) == []
        assert adds_content_word(row["response"], row["original_title"])
        assert row["prompt1"] and row["featured_fact"] in row["prompt2"] and row["title_source"] in ("llm", "template")
    # 3. a second full run asks nothing
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    s2 = json.loads((out / "summary.json").read_text())
    assert again.returncode == 0 and s2["llm"]["llm_cache_hits"] == s2["llm"]["llm_calls"]
    # 4. gsb on real titles: personalized (kept rows, or rejected candidates) vs original
    samples = tmp_path / "samples.parquet"
    if len(train):
        train.to_parquet(samples)
    else:
        cand = rej.dropna(subset=["candidate_title"])
        src = cand if len(cand) else rej
        rows = []
        for r in src.head(2).to_dict("records"):
            it = items.loc[r["target_item_id"]]
            rows.append({"user_id": r["user_id"], "original_title": it["title"],
                         "original_description": it["description"],
                         "title_a": r["candidate_title"] or it["title"] + " for Your Lab",
                         "title_b": it["title"], "title_list": [], "user_profile": ""})
        pd.DataFrame(rows).to_parquet(samples)
    g = subprocess.run([str(BIN / "hllm-creator"), "gsb", "--input", str(samples), "--out", str(tmp_path / "gsb"),
                        "--samples", "2", "--judge-max-tokens", "32", "--cache", str(cache), "--concurrency", "2"],
                       env=env, capture_output=True, text=True, timeout=1200)
    assert g.returncode == 0, g.stderr[-3000:]
    v = pd.read_parquet(tmp_path / "gsb" / "gsb.parquet")
    assert {"sample", "verdict_ab", "verdict_ba", "final"} <= set(v.columns) and len(v) >= 1
    assert v["final"].isin(["G", "S", "B"]).all()
    assert "Adv=" in g.stdout
