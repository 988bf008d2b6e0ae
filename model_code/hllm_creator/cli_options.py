"""A step's CLI options built from its typed config (as vLLM builds its CLI from ``EngineArgs``).

Each config field is declared once, in the step's config class: its type, default and description
become a typer option (``--field-name``, the description as help). A command declares only what is
not a config field as such (paths it maps to config fields, list options given as CSV, ``--quiet``)
and receives the generated options as keyword arguments::

    @config_options(GenerateConfig, exclude={"model_dir", "data_dir", "matches", "clusters_dir"},
                    names={"do_sample": "--sample/--greedy"})
    def generate_cmd(model: Path = typer.Option(..., "--model"), ..., **opts) -> None:
        cfg = step_config(GenerateConfig, model_dir=str(model), ..., **opts)

``overrides=True`` (train): every option defaults to None, which leaves the value to the preset the
command starts from; a boolean is then a ``--x/--no-x`` pair with a third, unset state.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import BaseModel

from hllm_creator.data.schema import DataError

_SCALARS = (bool, int, float, str, Path)


def _scalar(annotation) -> tuple[type, bool]:
    """(the CLI type of a field's annotation, whether None is allowed); TypeError if the CLI cannot
    take it as one option (lists, dicts, nested configs: the command maps those itself)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _scalar(rest[0])[0], True
    elif origin is Literal:  # typer shows the choices (<a|b>) and refuses any other value
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and kinds <= set(_SCALARS):
            return annotation, False
    elif annotation in _SCALARS:
        return annotation, False
    raise TypeError(f"no CLI option for a field of type {annotation!r}")


def _help(field) -> str | None:
    d = (field.description or "").strip()
    if not d:
        return None
    first = d.split(maxsplit=1)[0]
    if first.replace("-", "").isalpha() and first.islower():  # not an identifier such as item_id_list or k_sweep
        d = d[0].upper() + d[1:]
    return d + ("" if d.endswith((".", ")")) else ".")


def field_option(name: str, field, *, decls: str | tuple[str, ...] | None = None,
                 overrides: bool = False) -> inspect.Parameter:
    """The typer parameter of one config field: its type, default and help from the field."""
    kind, nullable = _scalar(field.annotation)
    if isinstance(decls, str):
        decls = (decls,)
    if field.is_required():
        default: Any = ...
    elif overrides:
        default, nullable = None, True
    else:
        default = field.get_default(call_default_factory=True)
    flag = "--" + name.replace("_", "-")
    if not decls:
        decls = (f"{flag}/--no-{flag[2:]}",) if kind is bool and (default is not False) else (flag,)
    annotation = Optional[kind] if nullable or default is None else kind  # noqa: UP045  (typer reads it at run time)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, help=_help(field)))


def config_options(cls: type[BaseModel], *, exclude=(), names: dict[str, Any] | None = None,
                   overrides: bool = False, prefix: str = "", only=None) -> Callable:
    """Decorator: the command takes one option per field of ``cls`` (``only`` those, in that order,
    or all but ``exclude`` and the command's own parameters), passed to it as keyword arguments
    named after the fields (``prefix`` + field name, so two configs can share a command)."""
    names = names or {}

    def wrap(func):
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in own}
        fields = cls.model_fields
        wanted = list(only) if only is not None else [n for n in fields if n not in set(exclude)]
        generated = []
        for n in wanted:
            if prefix + n in taken:
                continue
            try:
                generated.append(field_option(prefix + n, fields[n], decls=names.get(n), overrides=overrides))
            except TypeError as e:
                raise TypeError(f"{func.__name__}: {cls.__name__}.{n}: {e}; exclude it or map it in the "
                                "command") from None
        params = own + generated

        @functools.wraps(func)
        def command(**kwargs):
            return func(**kwargs)

        command.__signature__ = inspect.Signature(params, return_annotation=None)
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        command.config_fields = {**getattr(func, "config_fields", {}), **{p.name: cls for p in generated}}
        return command

    return wrap


def step_config(cls: type[BaseModel], **kw):
    """Build a step config; a validation error becomes a DataError that names the bad option."""
    from pydantic import ValidationError

    try:
        return cls(**kw)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'options'}: {err['msg']}" for err in e.errors())
        raise DataError(f"invalid options for {cls.__name__}: {msgs}") from None


def unprefixed(opts: dict, prefix: str) -> dict:
    """The options generated with ``prefix``, under their field names (and the rest, untouched)."""
    return {k[len(prefix):]: v for k, v in opts.items() if k.startswith(prefix)}
