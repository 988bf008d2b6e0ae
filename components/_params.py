"""Which typed config each component's parameters come from, and the component READMEs' parameter
tables generated from it (the config's field descriptions and the component's defaults, which
tests/unit/test_defaults_once.py holds equal to the config's).

KFP ships a component's source into its container and needs literal defaults in the signature, so
the signature cannot read the config; the test checks them instead. Rewrite the tables after a
change of a config field or a component signature (from the repo root)::

    python -m hllm_creator_kfp.components._params          # rewrite components/*/README.md tables
    python -m hllm_creator_kfp.components._params --check  # exit 1 when a table is stale
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import typing
from pathlib import Path

# component -> (config classes, first match wins; component parameter -> config field where the names
# differ, or None where the parameter means something of its own: a CSV string for a list, None for
# "the training preset's value", a cache path whose None is the default path, not "no cache")
# KFP's local runner casts every integer parameter with int() (kfp/local/executor_input_utils.py), so
# an integer parameter of a component cannot be None: 0 (train's head_steps: -1) stands for "not set"
# there and the component documents it; strings and floats are Optional[...] = None
_OWN_CACHE = {"cache_path": None}
STEP_CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "dataset_construct": (["hllm_creator.teacher.construct:ConstructConfig", "hllm_creator.llm.client:LLMConfig"],
                          _OWN_CACHE),
    "train": (["hllm_creator.train.config:TrainConfig"],
              {"creative_rows": None, "register": "register_model", "max_steps": None, "cls_epochs": None,
               "eval_users": None, "head_steps": None, "timeout_s": None}),
    "embed": (["hllm_creator.infer.embed:EmbedConfig"], {"max_users": None}),
    "cluster": (["hllm_creator.infer.cluster:ClusterConfig"], {"k": None, "k_sweep": None}),
    "match": (["hllm_creator.infer.match:MatchConfig"], {"ads": None}),
    "generate": (["hllm_creator.infer.generate:GenerateConfig"], {"max_pairs": None}),
    "gsb_eval": (["hllm_creator.teacher.gsb:GSBConfig", "hllm_creator.llm.client:LLMConfig"],
                 {"max_samples": None, **_OWN_CACHE}),
    "personalization_eval": (["hllm_creator.evaluate.config:PersonalizationConfig",
                              "hllm_creator.llm.client:LLMConfig"],
                             {"judge_base_url": "base_url", "judge_model": "model", "members_per_cluster": None,
                              "swap_pairs": None, **_OWN_CACHE}),
    # publish has no config class: its parameters are the keyword arguments of publish.publish.publish
    "publish": (["hllm_creator.publish.publish:publish"], {}),
    "refresh_prepare": ([], {}),
    "refresh_publish": (["hllm_creator.publish.refresh_config:RefreshConfig"], {}),
}
REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- parameters: generated from the step's config by `python -m hllm_creator_kfp.components._params` -->"
END = "<!-- end of generated parameters -->"


def load(spec: str):
    mod, _, name = spec.partition(":")
    return getattr(importlib.import_module(mod), name)


def component(step: str):
    return getattr(importlib.import_module(f"hllm_creator_kfp.components.{step}.component"), step)


def config_fields(step: str) -> dict[str, tuple[object, str | None]]:
    """Config field name -> (default, description) of the step's configs (the first class wins)."""
    out: dict[str, tuple[object, str | None]] = {}
    for spec in reversed(STEP_CONFIGS[step][0]):
        obj = load(spec)
        if hasattr(obj, "model_fields"):
            for name, f in obj.model_fields.items():
                default = f.get_default(call_default_factory=True) if not f.is_required() else inspect.Parameter.empty
                out[name] = (default, f.description)
        else:  # a library function: its keyword defaults
            for name, p in inspect.signature(obj).parameters.items():
                out[name] = (p.default, None)
    return out


def field_of(step: str, name: str, annotation, fields: dict):
    """(default, description) of the config field behind a component parameter, or None: artifacts
    and the parameters STEP_CONFIGS marks as the component's own have none."""
    if _type(annotation).startswith(("Input[", "Output[")):
        return None
    aliases = STEP_CONFIGS[step][1]
    key = aliases.get(name, name)
    return fields.get(key) if key is not None else None


def docstring_args(func) -> dict[str, str]:
    """The Google-style ``Args:`` section of a component's docstring: name -> text (one line)."""
    doc = inspect.getdoc(func) or ""
    args, cur, inside = {}, None, False
    for line in doc.splitlines():
        if line.strip() == "Args:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break
        m = re.match(r"^ {4}(\w+): ?(.*)$", line)
        if m:
            cur = m.group(1)
            args[cur] = m.group(2).strip()
        elif cur and line.strip():
            args[cur] += " " + line.strip()
    return args


def _type(annotation) -> str:
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is typing.Annotated:  # kfp's Input[X] / Output[X]
        base, *meta = typing.get_args(annotation)
        io = "Output" if any("Output" in getattr(m, "__name__", type(m).__name__) for m in meta) else "Input"
        inner = typing.get_args(base)
        name = f"List[{inner[0].__name__}]" if inner else base.__name__
        return f"{io}[{name}]"
    if typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return f"Optional[{_type(rest[0])}]" if len(rest) == 1 else str(annotation)
    name = getattr(annotation, "__name__", None)
    return name or str(annotation).replace("typing.", "").replace("kfp.dsl.types.artifact_types.", "")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(step: str) -> str:
    """The component's inputs and outputs as a markdown table: parameter, type, default, meaning. The
    meaning of a parameter is its config field's description, else the component docstring's."""
    comp = component(step)
    func = comp.python_func
    fields = config_fields(step)
    doc = docstring_args(func)
    rows = ["| parameter | type | default | meaning |", "|---|---|---|---|"]
    for name, p in inspect.signature(func).parameters.items():
        ann = _type(p.annotation)
        field = field_of(step, name, p.annotation, fields)
        meaning = (field[1] if field and field[1] else None) or doc.get(name, "")
        default = "" if p.default is inspect.Parameter.empty else f"`{p.default!r}`"
        rows.append(f"| `{name}` | `{ann}` | {default} | {_cell(meaning)} |")
    return "\n".join(rows)


def readme(step: str) -> Path:
    return REPO / "components" / step / "README.md"


def render(step: str, text: str) -> str:
    """``text`` (a README) with its generated table (between the markers) replaced."""
    if BEGIN not in text:
        raise ValueError(f"components/{step}/README.md has no {BEGIN} ... {END} block for the table")
    head, rest = text.split(BEGIN, 1)
    return head + f"{BEGIN}\n{table(step)}\n{END}" + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for step in STEP_CONFIGS:
        path = readme(step)
        text = path.read_text()
        new = render(step, text)
        if new != text:
            stale.append(str(path.relative_to(REPO)))
            if not check:
                path.write_text(new)
    if stale:
        print(("stale: " if check else "rewrote: ") + ", ".join(stale))
    return 1 if check and stale else 0


def describe(comp):
    """Give ``comp``'s inputs their config field's description (the compiled spec's input
    descriptions; the component docstring describes only what no config field does)."""
    step = comp.python_func.__name__
    fields = config_fields(step)
    params = inspect.signature(comp.python_func).parameters
    for name, spec in (comp.component_spec.inputs or {}).items():
        field = field_of(step, name, params[name].annotation, fields) if name in params else None
        if field and field[1]:
            spec.description = field[1]
    return comp


def described(step: str) -> set[str]:
    """The parameters of ``step``'s component that its config describes."""
    func = component(step).python_func
    fields = config_fields(step)
    return {n for n, p in inspect.signature(func).parameters.items()
            if (f := field_of(step, n, p.annotation, fields)) and f[1]}


if __name__ == "__main__":
    raise SystemExit(main())
