"""``hllm-creator serve ...``: KServe ModelServer processes (llm, creative, predictor)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Serve models over HTTP with KServe (binds 127.0.0.1 unless --host is given).",
                  no_args_is_help=True)
