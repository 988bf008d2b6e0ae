"""``hllm-creator``: every pipeline step is also a CLI subcommand (runnable without KFP).

Each area keeps its commands in ``<area>/commands.py``; those modules import heavy libraries
(torch, transformers, kfp) inside the command bodies, so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

app = typer.Typer(
    name="hllm-creator",
    help="Personalized ad titles with hierarchical LLMs (HLLM-Creator): data, teacher, train, "
         "embed/cluster/match/generate, GSB eval, KFP pipeline, KServe serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # errors are one line (main); --verbose re-raises with the traceback
    add_completion=False,
    # plain click help: paragraphs rewrapped to the terminal, long option text wrapped (never cut
    # with '...'), no <bool>/<str> metavars; tested at 80 columns (tests/unit/test_cli_surface.py)
    rich_markup_mode=None,
    context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]},
)


_VERBOSE = False  # the root --verbose: debug logging and, on an error, the traceback


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="Debug logging; an error shows its traceback.")) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # httpx: one INFO line per request (health polls, every teacher/judge call);
        # mlflow: its store's schema migrations on first use
        for name in ("httpx", "httpx2", "mlflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its level on import


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
    from hllm_creator.infer.commands import COMMANDS as INFER

    for name, cmd in INFER.items():
        app.command(name)(cmd)
    # -- evaluate: personalization on held-out users (the ruler is imported only in evaluate/) -
    from hllm_creator.evaluate.commands import personalization_cmd

    app.command("personalization")(personalization_cmd)
    # -- pipeline: run, compile, submit, compare, promote ---------------------------------------
    from hllm_creator.pipeline_commands import COMMANDS as PIPELINE

    for name, cmd in PIPELINE.items():
        app.command(name)(cmd)
    # -- publish: serving bundle per run, A/B readout (promote --rollout: pipeline_commands) ----
    from hllm_creator.publish.commands import ab_report_cmd, publish_cmd

    app.command("publish")(publish_cmd)
    app.command("ab-report")(ab_report_cmd)
    # -- refresh: a bundle + an ad feed -> a new bundle version, no training (issue 26) ---------
    from hllm_creator.publish.refresh_commands import refresh_cmd

    app.command("refresh")(refresh_cmd)


_register()


@app.command("demo")
def demo_cmd(
    llm_only: bool = typer.Option(False, "--llm-only",
                                  help="Only the quick check: prepare the data, start the embedded LLM "
                                       "server, ask it once through the openai client, stop it (~1 min)."),
    preset: str = typer.Option("demo", "--preset", "-p", help="Pipeline preset (tiny runs in ~3 min)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print KFP's own output (see `run --verbose`)."),
) -> None:
    """The README's main job. First one real SmolLM2 reply through the openai client (data -> embedded
    server -> request -> stop), then the whole pipeline, locally, on the bundled data with SmolLM2 as
    teacher, backbone and judge (`hllm-creator run --preset demo`); prints the MLflow parent run, the
    path of creatives.parquet, the GSB summary and, per ad, the clusters' top interests with their
    SERVED titles side by side (the original once), then the personalization figures with their 95% CIs."""
    from hllm_creator.demo import llm_roundtrip
    from hllm_creator.paths import work_dir
    from hllm_creator.pipeline_commands import _preset

    if not llm_only:
        _preset(preset, None)  # a bad preset fails here, before the LLM server starts
    llm_roundtrip(work_dir() / "data" / "amazon_scientific")  # a real SmolLM2 reply via the openai client
    if llm_only:
        return
    from hllm_creator.pipeline_commands import run_pipeline

    run_pipeline(preset, verbose=verbose)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # mlflow's own "View run at <url>" lines open its GenAI view; the CLI prints the model-training
    # URLs itself (pipeline_commands.mlflow_urls)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from hllm_creator.data.schema import DataError

    try:  # typer 0.29 vendors click; its exceptions live there
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer on the real click
        from click import exceptions as cx

    try:
        rv = app(standalone_mode=False)
    except cx.NoArgsIsHelpError as e:  # `hllm-creator data`: the group's help
        typer.echo(e.ctx.get_help() if e.ctx else str(e))
        raise SystemExit(2) from None
    except cx.UsageError as e:  # a bad option or value: one line, the command and where its help is
        cmd = e.ctx.command_path if e.ctx else "hllm-creator"
        typer.secho(f"error: {cmd}: {one_line(_UsageText(e.format_message()))} (see {cmd} --help)",
                    fg="red", err=True)
        raise SystemExit(e.exit_code) from None
    except cx.ClickException as e:
        typer.secho(f"error: {one_line(_UsageText(e.format_message()))}", fg="red", err=True)
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        typer.secho("aborted", fg="yellow", err=True)
        raise SystemExit(1) from None
    except DataError as e:  # bad input: a clear message, no traceback
        typer.secho(f"error: {one_line(e)}", fg="red", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="yellow", err=True)
        raise SystemExit(130) from None
    except Exception as e:  # noqa: BLE001 - any other failure: one line, the traceback with --verbose
        if _VERBOSE or "--verbose" in sys.argv[1:]:
            raise
        typer.secho(f"error: {one_line(e)} (hllm-creator --verbose ... shows the traceback)", fg="red", err=True)
        raise SystemExit(1) from None
    raise SystemExit(rv if isinstance(rv, int) else 0)


class _UsageText(Exception):
    pass


def one_line(e: BaseException) -> str:
    """An exception as one line: its message (whitespace folded), prefixed by its type when the
    message alone does not say what failed (built-in errors such as ValueError, OSError)."""
    msg = " ".join(str(e).split()) or repr(e)
    if type(e).__module__ == "builtins" and not isinstance(e, ValueError):
        msg = f"{type(e).__name__}: {msg}"
    return msg[:500] + (" ..." if len(msg) > 500 else "")


if __name__ == "__main__":
    main()
