"""The operator's console of a local run: one line per step as it starts and as it ends (status,
seconds, its headline figure); everything else (KFP's executor JSON, every step's own log) goes to a
log file whose path is printed.

``StepConsole`` is a text stream that replaces ``sys.stdout`` while the KFP local runner runs: the
runner's logger and the streamed output of every task subprocess are written through it. Each line
goes to the log file; the runner's task events ("Executing task 'x'", "Task 'x' finished with
status S", "Task x cache hit") become the console's lines. ``verbose=True`` also echoes every line
(what KFP prints without this layer).
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '?([\w.-]+)'?\s*$")
_END = re.compile(r"Task '?([\w.-]+)'? finished with status (\w+)")
_CACHED = re.compile(r"Task '?([\w.-]+)'? cache hit")
_QUIET_TASKS = {"importer"}
# a tqdm bar as it reaches the log (KFP reads task output line by line, '\r' included):
# "encode users:  40%|####      | 10/25 [00:35<00:49, 2.0s/it]" (HF Trainer's bar has no description)
_BAR = re.compile(r"^\s*(?:(?P<desc>[^|\[\]]{1,60}?):\s*)?(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)"
                  r"(?:\s*\[(?P<elapsed>[\d:]+)<(?P<left>[\d:?]+))?")
PROGRESS_EVERY = 25  # the console says a bar's progress at each quarter (the log keeps every update)
# bars of libraries that are over in a second or two: the log keeps them, the console does not
QUIET_BARS = ("Loading weights", "Loading checkpoint shards", "Downloading artifacts", "Uploading artifacts")
# task processes inherit this: a bar updates the log every 5 s at most, not ten times a second
TQDM_ENV = {"TQDM_MININTERVAL": "5"}


def _fmt(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) and not v.is_integer() else f"{int(v)}"


# step -> (metadata key, label) pairs: the figure a reader wants first
HEADLINES: dict[str, list[tuple[str, str]]] = {
    "dataset-construct": [("kept", "rows kept"), ("rejected", "rejected"), ("distinct_titles_per_ad", "titles/ad")],
    "train": [("model_recall@10", "Recall@10"), ("popularity_recall@10", "popularity"), ("steps", "steps")],
    "embed": [("users", "users")],
    "embed-merge": [("users", "users"), ("dim", "dim")],
    "cluster": [("k", "K"), ("silhouette", "silhouette")],
    "match": [("pairs_selected", "pairs selected"), ("mean_coverage", "coverage")],
    "generate": [("generations", "titles"), ("copy_rate", "copy rate"), ("distinct_titles_per_ad", "titles/ad")],
    "gsb-eval": [("G", "G"), ("S", "S"), ("B", "B"), ("adv", "Adv")],
    "personalization-eval": [("pers_copy_rate", "copy rate"), ("pers_distinct_per_ad", "titles/ad"),
                             ("pers_swap_changed", "slot swap changed")],
    "publish": [("files", "files"), ("model_version", "version")],
}


def _degraded(step: str, meta: dict) -> str:
    """Evidence a reader must not miss beside the headline: a judge that failed, fallbacks."""
    def num(k):
        v = meta.get(k)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    notes = []
    fails, n = num("judge_failures"), num("n")
    if fails and n:
        notes.append(f"judge failed on {int(fails)} of {int(n)} samples ({100 * fails / n:.0f}%; counted as Same)")
    if step == "generate" and num("fallbacks") and num("generations"):
        notes.append(f"{int(num('fallbacks'))} of {int(num('generations'))} titles fell back to the original")
    return "; ".join(notes)


def headline(step: str, executor_output: Path) -> str:
    """The step's headline figures from its executor output (the outputs' metadata)."""
    try:
        out = json.loads(executor_output.read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    meta: dict = {}
    for value in (out.get("artifacts") or {}).values():
        for art in value.get("artifacts", []):
            meta.update(art.get("metadata") or {})
    parts = [f"{label} {_fmt(float(meta[k]))}" for k, label in HEADLINES.get(step, [])
             if isinstance(meta.get(k), (int, float)) and not isinstance(meta.get(k), bool)]
    warn = _degraded(step, meta)
    return ", ".join(parts) + (f"  WARNING {warn}" if warn else "")


class StepConsole(io.TextIOBase):
    """A write-only text stream: every line to ``log``, task events to ``echo`` as one line each."""

    def __init__(self, log: TextIO, echo: Callable[[str], None], *, run_dir: Callable[[], Path | None],
                 verbose: bool = False):
        self._log, self._echo, self._run_dir, self._verbose = log, echo, run_dir, verbose
        self._buf = ""
        self._started: dict[str, list[float]] = {}
        self._running: list[str] = []  # tasks started and not ended, latest last
        self._said: dict[tuple[str, str], int] = {}  # (task, bar) -> last quarter said
        self.steps: list[tuple[str, str, float]] = []  # (task, status, seconds)
        for k, v in TQDM_ENV.items():
            os.environ.setdefault(k, v)

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._log.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line)
        return len(s)

    def flush(self) -> None:
        self._log.flush()

    def _line(self, raw: str) -> None:
        if self._verbose:
            self._echo(raw)
        line = _ANSI.sub("", raw)
        if m := _BAR.match(line):
            return self._progress(m)
        if m := _START.search(line):
            task = m.group(1)
            self._started.setdefault(task, []).append(time.time())
            self._running.append(task)
            if task not in _QUIET_TASKS and not self._verbose:
                self._echo(f"  {task:<22} started")
        elif m := _END.search(line):
            task, status = m.group(1), m.group(2)
            if task in self._running:
                self._running.remove(task)
            t0 = (self._started.get(task) or [time.time()]).pop(0)
            secs = time.time() - t0
            self.steps.append((task, status, secs))
            if task in _QUIET_TASKS or self._verbose:
                return
            fig = headline(task, self._executor_output(task)) if status == "SUCCESS" else ""
            self._echo(f"  {task:<22} {status.lower():<8} {secs:6.1f}s" + (f"  {fig}" if fig else ""))
        elif m := _CACHED.search(line):
            task = m.group(1)
            self.steps.append((task, "CACHED", 0.0))
            if task not in _QUIET_TASKS and not self._verbose:
                self._echo(f"  {task:<22} cached")

    def _progress(self, m: re.Match) -> None:
        """A progress bar of the running task: one console line per quarter reached (25/50/75/100%)."""
        if self._verbose or not self._running:
            return
        task = self._running[-1]
        if task in _QUIET_TASKS:
            return
        total, n = int(m.group("total")), int(m.group("n"))
        if total <= 0:
            return
        quarter = min(100, 100 * n // total) // PROGRESS_EVERY
        desc = (m.group("desc") or "progress").strip()
        if desc.startswith(QUIET_BARS):
            return
        if quarter <= self._said.get((task, desc), 0):
            return
        self._said[(task, desc)] = quarter
        left = m.group("left")
        eta = f", about {left} left" if left and "?" not in left and quarter * PROGRESS_EVERY < 100 else ""
        self._echo(f"  {task:<22} {desc} {quarter * PROGRESS_EVERY}% ({n}/{total}{eta})")

    def _executor_output(self, task: str) -> Path:
        run_dir = self._run_dir()
        if run_dir is None:
            return Path("/nonexistent")
        found = sorted(run_dir.glob(f"**/{task}/executor_output.json"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else Path("/nonexistent")
