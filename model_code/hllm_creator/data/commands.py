"""``hllm-creator data ...``"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Prepare datasets into the dataset-dir contract (items, interactions, manifest).",
                  no_args_is_help=True)


@app.command("prepare")
def prepare_cmd(
    out: Path = typer.Option(Path(".hllm/data/amazon_scientific"), "--out", "-o",
                             help="Dataset dir to write (atomically replaced)."),
    source: Optional[str] = typer.Option(None, help="bundled | amazon | reference | generic (default: the one "
                                                    "the other options belong to; bundled when none is given)"),
    inter: Optional[Path] = typer.Option(None, help="amazon: <name>.inter.json[.gz]"),
    item: Optional[Path] = typer.Option(None, help="amazon: <name>.item.json[.gz]"),
    reference: Optional[Path] = typer.Option(None, help="reference: the HLLM-Creator training parquet"),
    items: Optional[Path] = typer.Option(None, help="generic: items CSV/TSV/parquet"),
    interactions: Optional[Path] = typer.Option(None, help="generic: interactions CSV/TSV/parquet"),
    item_col: list[str] = typer.Option([], "--item-col",
                                       help="generic: OUR=THEIRS, e.g. --item-col item_id=asin "
                                            "(fields: item_id title description brand categories "
                                            "selling_points)"),
    inter_col: list[str] = typer.Option([], "--inter-col",
                                        help="generic: OUR=THEIRS, e.g. --inter-col user_id=uid "
                                             "(fields: user_id item_id ts label)"),
    mapping: Optional[Path] = typer.Option(None, help="generic: a YAML mapping file instead of the flags"),
    list_sep: Optional[str] = typer.Option(None, help="generic: separator of list cells (categories) in CSV "
                                                      "(default |; with --mapping: the file's list_sep)"),
    name: Optional[str] = typer.Option(None, help="Dataset name for the manifest."),
    on_invalid: str = typer.Option("error", "--on-invalid",
                                   help="error: the first invalid row stops (default). skip: drop invalid "
                                        "rows (at most --max-invalid), each listed in the manifest and "
                                        "MLflow."),
    max_invalid: int = typer.Option(100, "--max-invalid", min=0,
                                    help="With --on-invalid skip: more invalid rows than this is an error."),
    mlflow_log: bool = typer.Option(True, "--mlflow/--no-mlflow",
                                    help="With --on-invalid skip: log the dropped rows to an MLflow run."),
) -> None:
    """Write a dataset dir: items.parquet, interactions.parquet, manifest.json (with counts and sha256)."""
    from hllm_creator.data.schema import DataError

    if on_invalid not in ("error", "skip"):
        raise DataError(f"--on-invalid {on_invalid!r}: use error or skip")
    try:
        _prepare(out, source, inter, item, reference, items, interactions, item_col, inter_col, mapping,
                 list_sep, name, on_invalid, max_invalid, mlflow_log)
    except DataError as e:
        if on_invalid == "error" and e.row is not None:  # one bad row: say how to go on without editing
            raise DataError(f"{e}; --on-invalid skip drops such rows (at most --max-invalid, "
                            "each listed in the manifest)") from None
        raise


def _prepare(out, source, inter, item, reference, items, interactions, item_col, inter_col, mapping, list_sep,
             name, on_invalid, max_invalid, mlflow_log) -> None:
    from hllm_creator.data import adapters
    from hllm_creator.data.prepare import prepare, prepare_bundled
    from hllm_creator.data.schema import DataError

    given = {"inter": inter, "item": item, "reference": reference, "items": items, "interactions": interactions,
             "item-col": item_col or None, "inter-col": inter_col or None, "mapping": mapping,
             "list-sep": list_sep, "name": name}
    source = _choose_source(source, {k for k, v in given.items() if v is not None})
    list_sep = list_sep or "|"

    def need(**kw):
        for k, v in kw.items():
            if v is None:
                raise DataError(f"--{k} is required for --source {source}")

    def write(it, ia, *, items_file: str, interactions_file: str, **kw):
        invalid = None
        if on_invalid == "skip":
            it, ia, dropped = adapters.drop_invalid_rows(it, ia, items_file=items_file,
                                                         interactions_file=interactions_file,
                                                         max_invalid=max_invalid)
            invalid = {"policy": "skip", "max_invalid": max_invalid, "count": len(dropped),
                       "interactions_with_dropped_items": sum(d.get("interactions", 0) for d in dropped),
                       "rows": dropped}
            for d in dropped:
                typer.secho(f"dropped: {d['file']} row {d['row']} column {d['column']}: {d['why']}"
                            + (f" ({d['interactions']} interactions with it)" if d.get("interactions") else ""),
                            fg="yellow", err=True)
        ds = prepare(it, ia, out, items_file=items_file, interactions_file=interactions_file,
                     invalid_rows=invalid, **kw)
        if invalid is not None and mlflow_log:
            _log_invalid(ds, invalid)
        return ds

    if source == "bundled":
        if on_invalid == "skip":
            raise DataError("--on-invalid skip applies to --source amazon, reference or generic "
                            "(the bundled data is valid)")
        ds = prepare_bundled(out)
    elif source == "amazon":
        need(inter=inter, item=item)
        it, ia = adapters.amazon_json(inter, item)
        ds = write(it, ia, name=name or Path(str(inter)).name.split(".")[0], source=f"amazon json {inter}",
                   license="unknown", items_file=str(item), interactions_file=str(inter))
    elif source == "reference":
        need(reference=reference)
        it, ia = adapters.reference_parquet(reference)
        ds = write(it, ia, name=name or reference.stem, source=f"reference parquet {reference}",
                   license="unknown", items_file=str(reference), interactions_file=str(reference))
    elif source == "generic":
        if mapping is not None:
            flags = [f"--{k}" for k in ("items", "interactions", "item-col", "inter-col") if given[k] is not None]
            if flags:
                raise DataError(f"--mapping and {', '.join(flags)} both describe the tables: give one of them")
            spec = adapters.load_mapping_yaml(mapping)
            if given["list-sep"] is not None and "list_sep" in spec:
                raise DataError(f"--list-sep and the mapping's list_sep both set the separator: give one",
                                file=str(mapping))
            items_p, inter_p = Path(spec["items"]["path"]), Path(spec["interactions"]["path"])
            icols, acols = spec["items"].get("columns", {}), spec["interactions"].get("columns", {})
            sep = spec.get("list_sep", list_sep)
        else:
            need(items=items, interactions=interactions)
            items_p, inter_p = items, interactions
            icols, acols, sep = adapters.parse_mapping(item_col), adapters.parse_mapping(inter_col), list_sep
        it, ia = adapters.generic(items_p, inter_p, item_columns=icols, interaction_columns=acols, list_sep=sep)
        ds = write(it, ia, name=name or items_p.stem, source=f"generic {items_p} + {inter_p}",
                   license="unknown", items_file=str(items_p), interactions_file=str(inter_p))
    else:
        raise DataError(f"unknown --source {source!r}: use bundled, amazon, reference or generic")
    c = ds.manifest["counts"]
    typer.echo(f"wrote {out}: {c['users']:,} users, {c['items']:,} items, {c['interactions']:,} interactions "
               f"({c['users_with_split']:,} users with a leave-last-out split, "
               f"{c['users_too_short_for_split']} with fewer than 3 clicks)")
    inv = ds.manifest.get("invalid_rows")
    if inv is not None:
        typer.echo(f"skipped {inv['count']} invalid rows (+{inv['interactions_with_dropped_items']} interactions "
                   f"of dropped items), listed in {Path(out) / 'manifest.json'} under invalid_rows")


def _log_invalid(ds, invalid: dict) -> None:
    """The dropped rows in an MLflow run ``data-prepare``: a table, their count, the dataset name."""
    import pandas as pd

    from hllm_creator import tracking

    with tracking.step_run("data-prepare", {"dataset": ds.manifest["name"], "on_invalid": "skip",
                                            "max_invalid": invalid["max_invalid"]}) as run:
        tracking.log_metrics({"invalid_rows_dropped": invalid["count"],
                              "interactions_with_dropped_items": invalid["interactions_with_dropped_items"],
                              **{f"dataset_{k}": v for k, v in ds.manifest["counts"].items()}})
        rows = pd.DataFrame(invalid["rows"], columns=["file", "row", "column", "why", "id", "interactions"])
        tracking.log_table(rows.astype({"row": "int64"}).fillna({"interactions": 0}), "invalid_rows")
    typer.echo(f"dropped rows logged to MLflow run {run.info.run_id} (data-prepare, table invalid_rows.json)")


# which options belong to which source; every other option is an error for that source
SOURCE_OPTIONS = {
    "bundled": set(),
    "amazon": {"inter", "item", "name"},
    "reference": {"reference", "name"},
    "generic": {"items", "interactions", "item-col", "inter-col", "mapping", "list-sep", "name"},
}


def _choose_source(source: str | None, given: set[str]) -> str:
    """The source the options select (``--source`` when given); an option that does not apply to it
    is an error naming the option and the source it belongs to, never silently ignored."""
    from hllm_creator.data.schema import DataError

    if source is not None and source not in SOURCE_OPTIONS:
        raise DataError(f"unknown --source {source!r}: use {', '.join(SOURCE_OPTIONS)}")
    if source is None:
        owners = {s for s, opts in SOURCE_OPTIONS.items() if (given - {"name"}) & opts}
        if len(owners) > 1:
            raise DataError("options of several sources given (" + ", ".join(f"--{o}" for o in sorted(given)) +
                            "): choose one with --source")
        if not owners and given:  # --name alone
            raise DataError("--name applies to --source amazon, reference or generic (the bundled data has its own)")
        source = owners.pop() if owners else "bundled"
    stray = sorted(given - SOURCE_OPTIONS[source])
    if stray:
        where = {o: [s for s, opts in SOURCE_OPTIONS.items() if o in opts] for o in stray}
        raise DataError("; ".join(f"--{o} does not apply to --source {source} (it belongs to --source "
                                  f"{' / '.join(where[o])})" for o in stray))
    return source


@app.command("show")
def show_cmd(path: Path = typer.Argument(..., help="Dataset dir")) -> None:
    """Print a dataset dir's manifest and a few rows."""
    import json

    from hllm_creator.data.schema import load_dataset

    ds = load_dataset(path)
    typer.echo(json.dumps(ds.manifest, indent=2))
    typer.echo(ds.items.head(3).to_string())
