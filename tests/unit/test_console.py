"""issue 28: the run console (pipelines/console.py). A real tqdm bar in a task's output becomes one
console line per quarter (the log keeps every update); a gsb-eval whose judge failed says so beside
its headline."""

from __future__ import annotations

import io
import json

from tqdm import tqdm

from hllm_creator_kfp.pipelines.console import StepConsole


def _console(tmp_path):
    echoed: list[str] = []
    log = io.StringIO()
    c = StepConsole(log, echoed.append, run_dir=lambda: tmp_path)
    return c, echoed, log


def test_a_progress_bar_is_said_each_quarter(tmp_path):
    c, echoed, log = _console(tmp_path)
    c.write("Executing task 'embed'\n")
    buf = io.StringIO()
    for _ in tqdm(range(40), desc="encode users", file=buf, mininterval=0, miniters=1):
        pass
    # KFP reads a task's output with readline in text mode: each '\r' update arrives as a line
    c.write(buf.getvalue().replace("\r", "\n") + "\n")
    c.write("Task 'embed' finished with status SUCCESS\n")
    bars = [e for e in echoed if "encode users" in e]
    assert [b.split("encode users ")[1].split("%")[0] for b in bars] == ["25", "50", "75", "100"], echoed
    assert bars[-1].strip().startswith("embed") and "(40/40)" in bars[-1]
    assert echoed[0].strip() == "embed                  started".strip() and "success" in echoed[-1]
    assert log.getvalue().count("encode users") > 40  # every update stays in the log
    c.write("Executing task 'publish'\n")
    c.write("Downloading artifacts: 100%|##########| 29/29 [00:00<00:00, 20661.60it/s]\n")
    assert not [e for e in echoed if "Downloading" in e]  # a library's one-second bar: log only


def test_hf_trainer_bar_without_description(tmp_path):
    c, echoed, _ = _console(tmp_path)
    c.write("Executing task 'train'\n")
    for i in (3, 6, 12, 24):
        c.write(f" {100 * i // 24}%|####      | {i}/24 [00:{i:02d}<00:30,  1.2s/it]\n")
    assert [e.split("progress ")[1] for e in echoed if "progress" in e] == [
        "25% (6/24, about 00:30 left)", "50% (12/24, about 00:30 left)", "100% (24/24)"]


def test_judge_failures_are_said_beside_the_gsb_headline(tmp_path):
    c, echoed, _ = _console(tmp_path)
    d = tmp_path / "gsb-eval"
    d.mkdir()
    (d / "executor_output.json").write_text(json.dumps({"artifacts": {"report": {"artifacts": [
        {"metadata": {"G": 0, "S": 12, "B": 0, "adv": 0.0, "n": 12, "judge_failures": 7}}]}}}))
    c.write("Executing task 'gsb-eval'\n")
    c.write("Task 'gsb-eval' finished with status SUCCESS\n")
    line = echoed[-1]
    assert "G 0, S 12, B 0" in line and "WARNING judge failed on 7 of 12 samples (58%" in line, line


def test_the_closing_gsb_line_warns_of_judge_failures():
    from hllm_creator.pipeline_commands import judge_note

    assert judge_note({"G": 0, "S": 12, "B": 0, "n": 12, "judge_failures": 7}).startswith(
        "; WARNING: the judge failed on 7 of 12 samples (58%")
    assert judge_note({"n": 12, "judge_failures": 0}) == "" and judge_note({}) == ""
