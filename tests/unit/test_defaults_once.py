"""Defaults once: each step's typed config is the single source of its defaults. The CLI options are
generated from it (hllm_creator.cli_options); the component signature (KFP needs literal defaults: it
ships the function's source into the container) and the pipeline presets may only restate or
override it; this test fails when any of them differs from the config's, and when a component
README's parameter table is not the one generated from the configs.
"""

from __future__ import annotations

import inspect

import pytest

# (component module, component name, CLI module, CLI command, config classes (first match wins))
STEPS = [
    ("hllm_creator_kfp.components.cluster.component", "cluster", "hllm_creator.infer.commands", "cluster_cmd",
     ["hllm_creator.infer.cluster:ClusterConfig"]),
    ("hllm_creator_kfp.components.embed.component", "embed", "hllm_creator.infer.commands", "embed_cmd",
     ["hllm_creator.infer.embed:EmbedConfig"]),
    ("hllm_creator_kfp.components.match.component", "match", "hllm_creator.infer.commands", "match_cmd",
     ["hllm_creator.infer.match:MatchConfig"]),
    ("hllm_creator_kfp.components.generate.component", "generate", "hllm_creator.infer.commands", "generate_cmd",
     ["hllm_creator.infer.generate:GenerateConfig"]),
    ("hllm_creator_kfp.components.personalization_eval.component", "personalization_eval",
     "hllm_creator.evaluate.commands", "personalization_cmd",
     ["hllm_creator.evaluate.config:PersonalizationConfig", "hllm_creator.llm.client:LLMConfig"]),
    ("hllm_creator_kfp.components.dataset_construct.component", "dataset_construct", "hllm_creator.teacher.commands",
     "construct_cmd",
     ["hllm_creator.teacher.construct:ConstructConfig", "hllm_creator.llm.client:LLMConfig"]),
    ("hllm_creator_kfp.components.gsb_eval.component", "gsb_eval", "hllm_creator.teacher.commands", "gsb_cmd",
     ["hllm_creator.teacher.gsb:GSBConfig", "hllm_creator.llm.client:LLMConfig"]),
    # train: a None in the component or the CLI leaves the value to the training preset (train_preset)
    ("hllm_creator_kfp.components.train.component", "train", "hllm_creator.train.commands", "train_cmd",
     ["hllm_creator.train.config:TrainConfig", "hllm_creator.model.config:ModelConfig"]),
    # publish has no config class: the library function's keyword defaults are the config
    ("hllm_creator_kfp.components.publish.component", "publish", "hllm_creator.publish.commands", "publish_cmd",
     ["hllm_creator.publish.publish:publish"]),
]
# component/CLI parameter -> config field where the names differ
ALIASES = {"train": {"creative_rows": "max_creative_rows", "register": "register_model"}}
PRESET_DECIDES = {"train"}  # steps whose None means "the preset's value", not the config default
# train's CLI --preset names the training preset to start from; TrainConfig.preset records it (default custom)
NOT_A_DEFAULT = {("train", "preset")}
# "not set" is None (Optional[...] = None), except: 0 / -1 in an integer parameter of a component
# (KFP's local runner casts every integer parameter with int(), so it cannot be None), and "" for the
# LLM endpoint parameters the pipeline wires from its own string run parameters
UNSET = ("", None, 0, -1)


def _load(spec: str):
    import importlib

    mod, _, name = spec.partition(":")
    return getattr(importlib.import_module(mod), name)


def _config_defaults(classes) -> dict:
    out = {}
    for spec in reversed(classes):  # the first class wins
        obj = _load(spec)
        if not hasattr(obj, "model_fields"):  # a library function: its keyword defaults
            out.update({n: p.default for n, p in inspect.signature(obj).parameters.items()
                        if p.default is not inspect.Parameter.empty})
            continue
        for name, f in obj.model_fields.items():
            out[name] = f.default_factory() if f.default_factory is not None else f.default
    return out


def _same(glue, cfg, *, cli: bool, preset: bool = False) -> bool:
    if cli and glue is None:  # an optional CLI option left out: the config's default applies
        return True
    if preset and (glue is None or glue in UNSET and not isinstance(glue, bool)):  # the preset's value applies
        return True
    if cfg is None or cfg == []:
        return glue in UNSET or glue == cfg
    return glue == cfg


def _drift(defaults: dict, cfg: dict, where: str, *, cli: bool = False, aliases=None, preset=False) -> list[str]:
    defaults = {(aliases or {}).get(n, n): v for n, v in defaults.items()
                if (where.split()[-1].removesuffix("_cmd"), n) not in NOT_A_DEFAULT}
    return [f"{where}: {n} = {v!r}, config says {cfg[n]!r}" for n, v in defaults.items()
            if n in cfg and not _same(v, cfg[n], cli=cli, preset=preset)]


@pytest.mark.parametrize("comp_mod,comp_name,cli_mod,cli_name,classes", STEPS, ids=[s[1] for s in STEPS])
def test_component_and_cli_defaults_are_the_configs(comp_mod, comp_name, cli_mod, cli_name, classes):
    import importlib

    cfg = _config_defaults(classes)
    comp = getattr(importlib.import_module(comp_mod), comp_name)
    comp_defaults = {n: p.default for n, p in inspect.signature(comp.python_func).parameters.items()
                     if p.default is not inspect.Parameter.empty}
    cli = getattr(importlib.import_module(cli_mod), cli_name)
    cli_defaults = {n: getattr(p.default, "default", p.default)
                    for n, p in inspect.signature(cli).parameters.items()}
    cli_defaults = {n: v for n, v in cli_defaults.items() if v is not ...}
    kw = {"aliases": ALIASES.get(comp_name), "preset": comp_name in PRESET_DECIDES}
    drift = (_drift(comp_defaults, cfg, f"component {comp_name}", **kw)
             + _drift(cli_defaults, cfg, f"CLI {cli_name}", cli=True, **kw))
    assert not drift, "\n".join(drift)
    assert {ALIASES.get(comp_name, {}).get(n, n) for n in comp_defaults} & set(cfg), \
        "the mapping above names the wrong config"


# preset values taken from the preset's own PipelineResources (the volume a TrainJob mounts is the one
# the pipeline mounts): a reference, not a restated default
FROM_RESOURCES = {("train", "data_pvc"), ("train", "data_mount")}


@pytest.mark.parametrize("preset", ["tiny", "demo", "production", "gpu-multinode"])
def test_presets_only_override(preset):
    """A preset value equal to the component's default is a second copy of that default."""
    from hllm_creator_kfp.pipelines.hllm_pipeline import COMPONENTS
    from hllm_creator_kfp.pipelines.presets import STEPS as PIPELINE_STEPS
    from hllm_creator_kfp.pipelines.presets import get_preset

    p = get_preset(preset)
    copies = []
    for step in PIPELINE_STEPS:
        sig = inspect.signature(COMPONENTS[step].python_func).parameters
        for k, v in getattr(p, step).items():
            if k in sig and sig[k].default == v and (step, k) not in FROM_RESOURCES:
                copies.append(f"{step}.{k} = {v!r}")
    assert not copies, f"preset {preset} restates defaults: {copies}"


def test_cluster_cli_defaults_are_referenced_not_restated():
    """The k-means knobs named in issue 14 (written three times before): the CLI takes its defaults
    from ClusterConfig itself (the component must restate them as literals: KFP ships its source;
    the test above keeps them equal)."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for f in ("model_code/hllm_creator/infer/commands.py",):
        text = (repo / f).read_text()
        for knob in ("niter", "min_cluster_size"):
            assert not re.search(rf"{knob}\W[^\n]*=\s*(typer\.Option\()?\d", text), f"{f} restates {knob}"


def test_component_readme_tables_are_generated_from_the_configs():
    """components/*/README.md parameter tables: rewrite with `python -m hllm_creator_kfp.components._params`."""
    from hllm_creator_kfp.components import _params

    stale = [step for step in _params.STEP_CONFIGS
             if _params.render(step, _params.readme(step).read_text()) != _params.readme(step).read_text()]
    assert not stale, f"stale parameter tables (run python -m hllm_creator_kfp.components._params): {stale}"
    for step in _params.STEP_CONFIGS:  # every parameter row has a meaning
        table = _params.table(step)
        assert all(not row.endswith("|  |") for row in table.splitlines()), f"{step}: a parameter without a meaning"


def test_cli_options_come_from_the_config():
    """The options of every step command with a config are generated: type, default and help are
    the config field's (a command declares only what is not a config field as such)."""
    import importlib

    for _, _, cli_mod, cli_name, classes in STEPS:
        cmd = getattr(importlib.import_module(cli_mod), cli_name)
        generated = getattr(cmd, "config_fields", {})
        if not classes[0].split(":")[1][0].isupper():  # a library function, no config class (publish)
            continue
        assert generated, f"{cli_name}: no option generated from {classes[0]}"
        for name, cls in generated.items():
            field = cls.model_fields.get(name) or next(
                (f for n, f in cls.model_fields.items() if name.endswith("_" + n)), None)
            assert field is not None, f"{cli_name}: {name} is not a field of {cls.__name__}"
            opt = inspect.signature(cmd).parameters[name].default
            if field.description:
                assert opt.help and field.description.strip()[1:20] in opt.help, \
                    f"{cli_name} --{name}: help is not the field's"


def test_component_docstrings_leave_config_parameters_to_the_config():
    """A parameter the config describes is described once: no Args line in the component docstring;
    the compiled input description is the config field's."""
    from hllm_creator_kfp.components import _params

    for step in _params.STEP_CONFIGS:
        comp = _params.component(step)
        described = _params.described(step)
        restated = described & set(_params.docstring_args(comp.python_func))
        assert not restated, f"{step}: the docstring restates {sorted(restated)}"
        fields = _params.config_fields(step)
        for name in described:
            key = _params.STEP_CONFIGS[step][1].get(name, name)
            assert comp.component_spec.inputs[name].description == fields[key][1], f"{step}.{name}"
