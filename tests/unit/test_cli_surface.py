"""issue 28: the CLI a new user meets. Help fits 80 columns (nothing cut with '...', no <bool>
metavars), every example in the help, the README and docs/ parses against the real commands, every
--set example validates, `run`/`compile` check the whole preset before they start anything, and
errors are one line (the traceback only with --verbose)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hllm_creator.cli import app

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _group():
    return typer.main.get_command(app)


def _commands(cmd=None, path=("hllm-creator",)):
    """(path, click command) of every command and group."""
    cmd = cmd or _group()
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def test_help_fits_80_columns_without_cut_text_or_bool_noise():
    runner = CliRunner()
    paths = [p for p, _ in _commands()]
    assert len(paths) > 25
    for path in paths:
        r = runner.invoke(app, [*path[1:], "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert r.exit_code == 0, (path, r.output)
        long = [ln for ln in r.output.splitlines() if len(ln) > 80]
        assert not long, (path, long)
        assert "…" not in r.output and "<bool>" not in r.output, (path, r.output)
    # paragraphs are rewrapped, not the docstring's own line breaks: promote's text flows
    r = runner.invoke(app, ["promote", "--help"], terminal_width=80)
    assert "champion's (or above 0 with no champion)" in " ".join(r.output.split())


def _examples() -> list[tuple[str, str, bool]]:
    """(source, command line, complete) of every `hllm-creator ...` example in the README, docs/ and
    --help. ``complete``: a code-block line (runnable as written: required options too); an inline
    mention (`hllm-creator train`) or a help example only has to name real options with valid values."""
    out = []
    cmd_line = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(?:\S*/)?hllm-creator (\S.*)$")
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = f.read_text()
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r" #|\s+->|\s+──>", line)[0].strip().rstrip("&").strip()
                if m := cmd_line.match(line):
                    out.append((f.name, m.group(1), True))
        for m in re.finditer(r"`(?:\.venv/bin/)?hllm-creator ([^`]+)`", text):
            out.append((f.name, m.group(1), False))
    runner = CliRunner()
    for path, _ in _commands():
        h = runner.invoke(app, [*path[1:], "--help"], terminal_width=200).output
        for m in re.finditer(r"e\.g\. (--set [^;,)]+?)(?:[;,)]|\s*$)", h, flags=re.M):
            out.append((" ".join(path) + " --help", " ".join(path[1:]) + " " + m.group(1), False))
    return out


# an example that is a pattern, not a command line: alternatives (a|b), optional parts ([...]),
# ellipses, templates ({{.Name}}), placeholders for numbers and URLs (N, URL)
def _is_pattern(args: str) -> bool:
    return bool(re.search(r"\\\||\[|\.\.\.|<[a-z ]+>|\||\{\{|(?:^|\s)(?:N|URL)(?:\s|$)", args))


def _parse(args: str, complete: bool):
    """Parse a command line against the real command (option names, types, choices; required options
    when ``complete``) without running it; --set values are also validated against the preset."""
    from typer._click import exceptions as cx

    tokens = shlex.split(args.replace("$PWD", "/tmp").replace("$HLLM_WORKDIR", "/tmp"))
    cmd, path = _group(), ["hllm-creator"]
    while tokens and tokens[0] in getattr(cmd, "commands", {}):
        cmd = cmd.commands[tokens[0]]
        path.append(tokens.pop(0))
    if getattr(cmd, "commands", None):
        assert not tokens or tokens[0] in ("-h", "--help"), f"unknown command {tokens[0]!r} under {' '.join(path)}"
        return
    try:
        ctx = cmd.make_context(" ".join(path), tokens)
    except cx.MissingParameter:
        if complete:
            raise
        ctx = cmd.make_context(" ".join(path), tokens, resilient_parsing=True)
    except typer.Exit:  # --help
        return
    sets = ctx.params.get("sets")
    if sets:
        from hllm_creator.pipeline_commands import _preset

        _preset(ctx.params.get("preset") or "demo", sets)


def test_every_example_in_readme_docs_and_help_parses():
    examples = _examples()
    assert len(examples) > 30
    checked, failures = 0, []
    for src, args, complete in examples:
        if _is_pattern(args):
            continue
        try:
            _parse(args, complete)
            checked += 1
        except Exception as e:  # noqa: BLE001 - collect every failing example
            failures.append(f"{src}: hllm-creator {args}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
    assert checked > 20
    assert any("--set train.max_steps=2" in a for _, a, _ in examples)  # the help's own example is among them


def test_run_checks_the_whole_preset_before_starting_anything(tmp_path, monkeypatch):
    work = Path(os.environ["HLLM_WORKDIR"])
    before = sorted(p.name for p in work.iterdir()) if work.exists() else []
    runner = CliRunner()
    for sets, want in ((["train.epochs=2"], "preset sets ['epochs']"),
                       (['train.max_steps="many"'], "train.max_steps='many'"),
                       (["cluster.k=true"], "cluster.k=True"),
                       (["nope.x=1"], "no section 'nope'")):
        for cmd in (["run", "--preset", "tiny"], ["compile", "--preset", "tiny", "-o", str(tmp_path / "p.yaml")]):
            r = runner.invoke(app, [*cmd, *[a for s in sets for a in ("--set", s)]])
            assert r.exit_code == 2 and want in " ".join(r.output.split()), (cmd, sets, r.output)
            assert "pipeline tiny" not in r.output  # refused before the run's first line
    after = sorted(p.name for p in work.iterdir()) if work.exists() else []
    assert after == before  # no dataset, MLflow store, pipeline root or server was made
    assert not (tmp_path / "p.yaml").exists()


def test_compile_writes_outside_the_checkout_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["compile", "--preset", "tiny", "--set", "train.max_steps=2"])
    assert r.exit_code == 0, r.output
    out = Path(os.environ["HLLM_WORKDIR"]) / "hllm-creator.pipeline.yaml"
    assert out.exists() and str(out) in r.output and not list(tmp_path.glob("*.yaml"))


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hllm-creator"), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_errors_are_one_line_naming_what_and_where(tmp_path):
    r = _cli("serve", "predictor", "--model-dir", str(tmp_path / "no_such_dir"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--model-dir" in r.stderr and "no_such_dir: no such directory" in r.stderr
    r = _cli("compile", "--set", "train.epochs=2")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    r = _cli("promote", "--percent", "200")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--percent" in r.stderr, r.stderr
    r = _cli("--nope")
    assert r.returncode == 2 and "No such option: --nope" in r.stderr and r.stderr.count("\n") == 1


def test_unknown_alias_lists_the_aliases_that_exist(tmp_path):
    from hllm_creator import tracking

    d = tmp_path / "model"
    d.mkdir()
    (d / "hllm_config.json").write_text("{}")
    with tracking.step_run("train"):
        tracking.register_model(d)  # alias candidate
    r = _cli("serve", "predictor", "--model-uri", "models:/hllm-creator@champion")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "has no alias 'champion'; its aliases: @candidate (version 1)" in r.stderr, r.stderr
    with pytest.raises(Exception, match="its aliases: @candidate"):
        tracking.download_registered("models:/hllm-creator@champion", tmp_path / "dl")


def test_an_unexpected_failure_is_one_line_and_verbose_shows_the_traceback():
    code = ("import sys; from hllm_creator import cli\n"
            "@cli.app.command('boom')\n"
            "def boom():\n    raise OSError(28, 'No space left on device')\n"
            "sys.argv = ['hllm-creator', *sys.argv[1:]]; cli.main()\n")
    r = subprocess.run([sys.executable, "-c", code, "boom"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "error: OSError: [Errno 28] No space left on device" in r.stderr and "--verbose" in r.stderr
    r = subprocess.run([sys.executable, "-c", code, "--verbose", "boom"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr


def test_printed_ui_command_is_runnable_as_pasted_and_urls_open_model_training_mode(tmp_path):
    """The command names the venv's mlflow by its absolute path (a fresh clone has none on PATH);
    every URL carries ?workflowType=machine_learning (the browser check: tests/integration/test_mlflow_ui.py)."""
    from hllm_creator.pipeline_commands import mlflow_ui, mlflow_urls

    url, cmd = mlflow_ui(f"sqlite:///{tmp_path}/mlflow.db", "1", "abc", port=5001)
    assert url == "http://127.0.0.1:5001/#/experiments/1/runs/abc?workflowType=machine_learning"
    env, exe, sub = cmd.split()[:3]
    assert env == "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" and sub == "ui"
    assert Path(exe).is_absolute() and Path(exe).exists() and Path(exe).parent == BIN
    assert f"--backend-store-uri sqlite:///{tmp_path}/mlflow.db" in cmd and "--port 5001" in cmd
    u = mlflow_urls("https://mlflow.example.com/", "7")
    assert u == {"runs": "https://mlflow.example.com/#/experiments/7/runs?workflowType=machine_learning",
                 "models": "https://mlflow.example.com/#/models?workflowType=machine_learning"}
    url, cmd = mlflow_ui("https://mlflow.example.com", "7", "r1")
    assert cmd is None and url.endswith("/#/experiments/7/runs/r1?workflowType=machine_learning")


def test_every_shipped_preset_passes_the_value_check():
    from hllm_creator.pipeline_commands import check_preset_values
    from hllm_creator_kfp.pipelines.presets import PRESETS, get_preset

    for name in PRESETS:
        check_preset_values(get_preset(name))


def test_demo_runs_the_pipeline_in_subprocesses_not_docker(monkeypatch):
    """`hllm-creator demo` calls run_cmd as a function: every option must arrive as a value (a typer
    default left in place is a truthy OptionInfo, which once turned the demo into a docker run)."""
    import hllm_creator.demo
    import hllm_creator_kfp.pipelines.local_runner as lr

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_local(preset, **kw):  # a fake: records how the pipeline would start, runs nothing
        seen.update(kw, preset=preset.name)
        raise Stop

    monkeypatch.setattr(hllm_creator.demo, "llm_roundtrip", lambda data_dir: "a title")
    monkeypatch.setattr(lr, "run_local", fake_run_local)
    r = CliRunner().invoke(app, ["demo", "--preset", "tiny"])
    assert isinstance(r.exception, Stop), r.output
    assert seen["preset"] == "tiny" and seen["docker"] is None and seen["pipeline_root"] is None


def test_the_cli_imports_no_torch_kfp_or_mlflow():
    """`hllm-creator --help` stays fast: the commands build their options from light config modules and
    import the steps (torch, transformers, kfp, mlflow) only when they run."""
    code = ("import sys, hllm_creator.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'kfp', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
