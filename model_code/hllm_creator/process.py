"""Start and stop a `hllm-creator serve ...` process on loopback (the embedded default).

Used by the demo and the local pipeline runner: the teacher and the judge talk to it through any
OpenAI client, exactly as they would talk to a remote endpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """Terminate, wait ``grace_s``, then kill: how every server process of ours is stopped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class ServerHandle:
    url: str            # http://127.0.0.1:PORT
    proc: subprocess.Popen
    log: Path

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/openai/v1"


def wait_ready(url: str, exited: Callable[[], str | None], *, timeout: float = 300, interval: float = 0.5,
               detail: Callable[[], str] = str) -> float:
    """Poll ``url``/v2/health/ready until it answers 200; returns the seconds waited. ``exited()`` says
    why the server is gone (RuntimeError) or None while it runs; ``detail()`` is added to a timeout."""
    import httpx

    t0 = time.monotonic()
    while True:
        why = exited()
        if why is not None:
            raise RuntimeError(why)
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{url} not ready after {timeout}s{detail()}")
        time.sleep(interval)


def _exe() -> list[str]:
    return [sys.executable, "-m", "hllm_creator.cli"]


@contextlib.contextmanager
def serve_process(kind: str, args: list[str], *, port: int | None = None, timeout: float = 300,
                  log_dir: str | os.PathLike | None = None) -> Iterator[ServerHandle]:
    """Run ``hllm-creator serve KIND ARGS --host 127.0.0.1 --port PORT`` until the block exits."""
    port = port or free_port()
    log = Path(log_dir or tempfile.mkdtemp(prefix="hllm-serve-")) / f"serve-{kind}-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(_exe() + ["serve", kind, *args, "--host", "127.0.0.1", "--port", str(port)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, lambda: None if proc.poll() is None else (
            f"`hllm-creator serve {kind}` exited with {proc.returncode}; log {log}:\n{log.read_text()[-2000:]}"),
            timeout=timeout, detail=lambda: f" (`hllm-creator serve {kind}`; log {log})")
        yield ServerHandle(url=url, proc=proc, log=log)
    finally:
        stop_process(proc)
