"""The online A/B test as the predictor serves it: assignment and the exposure/feedback sink.

- :func:`assign`: a user's variant, ``personalized`` or ``control``, from sha256(salt, user id):
  deterministic across requests, replicas and restarts; ``share`` of the users get personalized
  titles. Control users are served the original title.
- :class:`EventSink`: an append-only JSONL directory. Each server process writes its own segment
  file (``<kind>-<utc>.<ns>-<pid>-<rand>.jsonl``); every write is flushed and fsynced before the request
  is answered, so an answered exposure or click survives a killed process. A torn last line (a kill
  in the middle of a write) is skipped and counted by :func:`read_events`. On a cluster, mount a
  PVC at the sink dir, or ship the segments to an object store / Kafka topic with a log shipper
  (docs/deploy.md); the readout (``publish.ab``) reads the same JSONL.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERSONALIZED, CONTROL = "personalized", "control"
VARIANTS = (PERSONALIZED, CONTROL)
EXPOSURES, FEEDBACK = "exposures", "feedback"


@dataclass(frozen=True)
class Experiment:
    """An A/B experiment on the predictor: ``salt`` (its name) + the personalized ``share``."""

    salt: str
    share: float = 0.5

    def __post_init__(self):
        if not self.salt or not self.salt.strip():
            raise ValueError("an experiment needs a non-empty salt (its name)")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"the personalized share must be in [0, 1], got {self.share}")

    def variant(self, user_id: str) -> str:
        return assign(user_id, self.salt, self.share)


def bucket(user_id: str, salt: str) -> float:
    """A uniform number in [0, 1) from sha256(salt, user id): stable across processes and versions."""
    h = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign(user_id: str, salt: str, share: float = 0.5) -> str:
    return PERSONALIZED if bucket(str(user_id), salt) < share else CONTROL


# ---- the sink --------------------------------------------------------------------------------------
class EventSink:
    """Append-only JSONL segments under ``root``; one segment per process and kind."""

    def __init__(self, root: str | Path, kind: str, *, fsync: bool = True):
        self.root = Path(root)
        self.kind, self.fsync = kind, fsync
        self.root.mkdir(parents=True, exist_ok=True)
        ns = time.time_ns()  # names sort in creation order: the readout reads segments in order
        name = (f"{kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(ns / 1e9))}.{ns % 10**9:09d}-{os.getpid()}-"
                f"{uuid.uuid4().hex[:6]}.jsonl")
        self.path = self.root / name
        self._lock = threading.Lock()
        self._f = open(self.path, "ab", buffering=0)
        dfd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the new segment's name is durable too
        finally:
            os.close(dfd)
        self.written = 0

    def write(self, events: Iterable[dict[str, Any]]) -> int:
        """Append ``events`` (one JSON line each, in one write) and make them durable; returns the count."""
        lines = [json.dumps(e, separators=(",", ":"), default=str, ensure_ascii=False) for e in events]
        if not lines:
            return 0
        data = ("\n".join(lines) + "\n").encode()
        with self._lock:
            self._f.write(data)
            if self.fsync:
                os.fsync(self._f.fileno())
            self.written += len(lines)
        return len(lines)

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


def read_events(root: str | Path, kind: str) -> tuple[list[dict[str, Any]], int]:
    """All events of ``kind`` under ``root`` (every segment), and the count of torn lines skipped."""
    out, torn = [], 0
    for f in sorted(Path(root).glob(f"{kind}-*.jsonl")):
        with open(f, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    torn += 1  # the last write of a killed process: never acknowledged
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    torn += 1
    return out, torn


def exposure_event(*, experiment: str, user_id: str, ad_id: str, cluster_id: int | None, variant: str, title: str,
                   personalized: bool, model_version: str | None, bundle_id: str | None,
                   request_id: str | None = None) -> dict[str, Any]:
    return {"exposure_id": uuid.uuid4().hex, "ts": time.time(), "experiment": experiment, "user_id": user_id,
            "ad_id": ad_id, "cluster_id": cluster_id, "variant": variant, "title": title,
            "personalized": personalized, "model_version": model_version, "bundle_id": bundle_id,
            "request_id": request_id}
