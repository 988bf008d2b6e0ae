"""The MLflow UI as a reviewer sees it, in a real headless browser (Debian's ``chromium``).

Logs a pipeline-shaped parent run with a step run and registers a model through the project's
tracking layer into the embedded sqlite store, starts the MLflow UI with the command ``hllm-creator
run`` prints (``pipeline_commands.mlflow_ui``, run as pasted into bash), then loads the URLs it prints
(``pipeline_commands.mlflow_urls``: model-training mode, ``?workflowType=machine_learning``) and
asserts the rendered page text: the runs table with the run, "Model registry" in the sidebar, the
run's page, the registered model. It also loads the bare experiment URL and asserts that MLflow
3.17 opens it on the GenAI overview (what a URL without the parameter shows: why it is there).

    .venv/bin/python tests/integration/mlflow_ui_check.py [--screenshot docs/img/mlflow_ui_runs.png]

Exit 0 when every check holds; one line per check. ``tests/integration/test_mlflow_ui.py`` runs it
(skipped, with the reason, only where no chromium is installed).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def page_text(browser: str, url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The rendered text of ``url`` (scripts run; tags, scripts and styles stripped)."""
    base = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--window-size=1400,900", "--virtual-time-budget=20000",
            "--hide-scrollbars"]
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(base + [f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def log_pipeline_run(root: Path) -> tuple[str, str, str]:
    """(experiment id, parent run id, parent run name) of a pipeline-shaped run with a registered
    model, in the embedded store a local run uses (``sqlite:///$HLLM_WORKDIR/mlflow.db``)."""
    os.environ["HLLM_WORKDIR"] = str(root / "work")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'work' / 'mlflow.db'}"
    from hllm_creator import tracking

    exp = tracking.ensure_experiment()
    name = "ui-check-pipeline"
    model_dir = root / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "hllm_config.json").write_text('{"note": "a stand-in model dir for the UI check"}')
    with tracking.parent_run(name) as parent:
        with tracking.step_run("train", {"max_steps": 2}):
            for step, loss in enumerate((2.0, 1.5, 1.2)):
                tracking.log_metrics({"train_loss": loss}, step=step)
            tracking.register_model(model_dir)
    return exp, parent.info.run_id, name


def start_ui(cmd: str, base: str, root: Path) -> subprocess.Popen:
    """The UI command exactly as the CLI prints it (``bash -c``: pasted into a shell)."""
    import httpx

    proc = subprocess.Popen(["bash", "-c", cmd], stdout=open(root / "mlflow.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 180:
        if proc.poll() is not None:
            raise RuntimeError(f"the printed UI command exited {proc.returncode}; see {root / 'mlflow.log'}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    os.killpg(proc.pid, 15)
    raise RuntimeError(f"mlflow ui not healthy after 180 s; see {root / 'mlflow.log'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--screenshot", type=Path, default=None, help="Save the runs table as this PNG.")
    args = ap.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"no browser: none of {', '.join(BROWSERS)} on PATH (Debian: apt-get install chromium)")
        return 2
    from hllm_creator.pipeline_commands import mlflow_ui, mlflow_urls
    from hllm_creator.process import free_port
    from hllm_creator.tracking import MODEL_NAME, resolve_tracking_uri

    root = Path(tempfile.mkdtemp(prefix="mlflow-ui-check-"))
    exp, run_id, run_name = log_pipeline_run(root)
    port = free_port()
    run_url, cmd = mlflow_ui(resolve_tracking_uri(), exp, run_id, port=port)  # what `run` prints
    url = f"http://127.0.0.1:{port}"
    print(f"UI command as printed: {cmd}")
    proc = start_ui(cmd, url, root)
    failed = 0
    try:
        urls = mlflow_urls(url, exp, run_id)
        assert urls["run"] == run_url
        checks = [
            ("runs table", urls["runs"], ["Runs", "Model registry", run_name, "matching runs"], ["Detect Issues"]),
            ("run page", urls["run"], [run_name, "Model registry", "Overview"], []),
            ("model registry", urls["models"], ["Registered Models", MODEL_NAME], []),
            # without the parameter MLflow 3.17 opens its GenAI overview: the reason the URLs carry it
            ("bare experiment URL (GenAI mode)", f"{url}/#/experiments/{exp}", ["Traces"], ["Model registry"]),
        ]
        for what, page, want, unwanted in checks:
            shot = args.screenshot if what == "runs table" else None
            text = page_text(browser, page, root / f"profile-{len(what)}", shot)
            missing = [w for w in want if w not in text]
            present = [u for u in unwanted if u in text]
            ok = not missing and not present
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {what}: {page}" + ("" if ok else
                  f" (missing {missing}, unexpected {present}; page text: {text[:400]!r})"))
        if args.screenshot is not None:
            print(f"screenshot: {args.screenshot}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)  # the store, the browser profiles: nothing left in /tmp
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
