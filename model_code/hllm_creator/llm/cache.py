"""On-disk reply cache for LLM calls: one sqlite file, safe for concurrent threads and processes.

Keyed by sha256 of (endpoint, model, messages, generation parameters, schema): a re-run after a
crash finds every finished call here and does not ask again, and a reply of one endpoint is never
served for another that hosts a model of the same name. A successful reply is served for good; a
reply that failed its schema only for ``max_failure_age_s`` after it was recorded (the client's
``failure_ttl_s``): a resume soon after a crash does not pay for known failures again, a later run
asks them again (and a success overwrites the failure), so a failure is never cached for good.

Each write is one short committed transaction (``synchronous=FULL``: a finished call survives a
SIGKILL or a power cut). WAL mode + busy timeout let several writers (threads of one run, or two
runs) share a file. sqlite's WAL needs shared memory on ONE host: keep the file on a local disk or
an RWO volume, or set ``HLLM_LLM_CACHE_JOURNAL=delete`` (rollback journal) on a network filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

JOURNAL_ENV = "HLLM_LLM_CACHE_JOURNAL"


def normalize_endpoint(base_url: str | None) -> str:
    """The endpoint part of a cache key: scheme://host:port/path, lower-cased host, no trailing '/'."""
    if not base_url:
        return ""
    from urllib.parse import urlsplit

    u = urlsplit(base_url.strip())
    host = (u.hostname or "").lower()
    port = u.port or {"http": 80, "https": 443}.get(u.scheme, 0)
    return f"{u.scheme}://{host}:{port}{u.path.rstrip('/')}"


def cache_key(model: str, messages: list[dict], params: dict[str, Any], endpoint: str | None = None) -> str:
    blob = json.dumps({"endpoint": normalize_endpoint(endpoint), "model": model, "messages": messages,
                       "params": params}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    def __init__(self, path: str | Path, journal_mode: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.journal_mode = (journal_mode or os.environ.get(JOURNAL_ENV) or "wal").lower()
        if self.journal_mode not in ("wal", "delete", "truncate"):
            raise ValueError(f"{JOURNAL_ENV}={self.journal_mode!r}: use wal, delete or truncate")
        self._local = threading.local()
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, value TEXT, "
                      "created REAL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def get(self, key: str, *, max_failure_age_s: float | None = None) -> dict | None:
        """The cached reply for ``key``. A recorded failure counts only while it is younger than
        ``max_failure_age_s`` (None: any age; 0: never)."""
        row = self._conn().execute("SELECT value, created FROM replies WHERE key = ?", (key,)).fetchone()
        if not row:
            return None
        value = json.loads(row[0])
        if not value.get("ok", True) and max_failure_age_s is not None:
            if time.time() - float(row[1] or 0) >= max_failure_age_s:
                return None
        return value

    def put(self, key: str, model: str, value: dict) -> None:
        self._conn().execute("INSERT OR REPLACE INTO replies (key, model, value, created) VALUES (?, ?, ?, ?)",
                             (key, model, json.dumps(value, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM replies").fetchone()[0])
