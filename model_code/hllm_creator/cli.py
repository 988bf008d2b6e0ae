"""``hllm-creator``: every pipeline step is also a CLI subcommand (runnable without KFP).

Each area keeps its commands in ``<area>/commands.py``; those modules import heavy libraries
(torch, transformers, kfp) inside the command bodies, so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import os

import typer

app = typer.Typer(
    name="hllm-creator",
    help="Personalized ad titles with hierarchical LLMs (HLLM-Creator): data, teacher, train, "
         "embed/cluster/match/generate, GSB eval, KFP pipeline, KServe serving.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register() -> None:
    # -- foundation ----------------------------------------------------------------------------
    from hllm_creator.data.commands import app as data_app
    from hllm_creator.llm.commands import app as models_app

    app.add_typer(data_app, name="data")
    app.add_typer(models_app, name="models")
    # -- serving (llm, creative, predictor) ----------------------------------------------------
    from hllm_creator.serving.commands import app as serve_app

    app.add_typer(serve_app, name="serve")
    # -- teacher: construct, gsb ---------------------------------------------------------------
    from hllm_creator.teacher.commands import construct_cmd, gsb_cmd

    app.command("construct")(construct_cmd)
    app.command("gsb")(gsb_cmd)
    # -- train ---------------------------------------------------------------------------------
    from hllm_creator.train.commands import train_cmd

    app.command("train")(train_cmd)
    # -- infer: embed, cluster, match, generate ------------------------------------------------
    from hllm_creator.infer.commands import register as register_infer

    register_infer(app)
    # -- pipeline: run, compile, submit, compare, promote ---------------------------------------
    from hllm_creator.pipeline_commands import register as register_pipeline

    register_pipeline(app)


_register()


@app.command("demo")
def demo_cmd(
    workdir: str = typer.Option(".hllm", help="Where data, runs and the embedded MLflow store go."),
) -> None:
    """The README's main job: prepare the bundled data, start the embedded LLM server, ask it through
    the openai client, print the answer, stop the server."""
    from pathlib import Path

    from hllm_creator.demo import llm_roundtrip

    os.environ.setdefault("HLLM_WORKDIR", str(Path(workdir).resolve()))
    llm_roundtrip(Path(workdir) / "data" / "amazon_scientific")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from hllm_creator.data.schema import DataError

    try:
        app()
    except DataError as e:  # bad input: a clear message, no traceback
        typer.secho(f"error: {e}", fg="red", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
