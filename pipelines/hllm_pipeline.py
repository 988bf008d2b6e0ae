"""The HLLM-Creator pipeline: dataset-construct -> train -> embed (ParallelFor over user shards +
merge) -> cluster -> match -> generate -> gsb-eval and personalization-eval (both after generate),
built from the eight components in ``components/<step>/component.py``.

``build_pipeline(preset)`` returns a ``@dsl.pipeline`` function whose step arguments are the
preset's values (compiled into the YAML as constants; recompile with other values) and whose
parameters are what changes per run: ``data_dir``, ``llm_base_url``, ``llm_model`` and
``mlflow_parent_run_id``.

Wiring is by name: each component receives, among the values available at its place in the DAG
(pipeline parameters, upstream outputs, the preset's arguments for that step), exactly the inputs
it declares; a required input with no value is an error that names it. So a component may take
fewer knobs than a preset offers, but never silently lose a required one.

Cluster settings (``resources`` of the preset): CPU/memory requests and limits, GPU requests via
``set_accelerator_type``/``set_accelerator_limit`` (train, embed, generate in ``production``), GPU
node selector + toleration; via kfp-kubernetes: the MLflow client secret as env on every task, the
LLM secret (OPENAI_*) only on ``LLM_STEPS``, the durable work PVC only on ``STATE_STEPS``, a non-root
security context, an emptyDir for /tmp, the MLflow NetworkPolicy's pod label, and OMP_NUM_THREADS
from the CPU limit. The local runner ignores all of them (KFP warns for the accelerator/CPU/
memory calls; kfp-kubernetes settings are silently skipped).
"""


import importlib
import logging
from typing import Any

from kfp import dsl

from pipelines.presets import STEPS, Preset

log = logging.getLogger(__name__)

PIPELINE_NAME = "hllm-creator"

# step -> (module, component function name(s)); the first is the step's component.
COMPONENTS = {
    "dataset_construct": ("components.dataset_construct.component", ["dataset_construct"]),
    "train": ("components.train.component", ["train"]),
    "embed": ("components.embed.component", ["embed", "embed_merge"]),
    "cluster": ("components.cluster.component", ["cluster"]),
    "match": ("components.match.component", ["match"]),
    "generate": ("components.generate.component", ["generate"]),
    "gsb_eval": ("components.gsb_eval.component", ["gsb_eval"]),
    "personalization_eval": ("components.personalization_eval.component", ["personalization_eval"]),
}

# The steps that call an LLM (teacher / judge): the only ones that get the LLM secret on a cluster.
LLM_STEPS = ("dataset_construct", "gsb_eval", "personalization_eval")
# The steps whose state must survive a killed pod (reply cache, training checkpoints): they mount
# the durable work PVC and get HLLM_STATE_DIR.
STATE_STEPS = (*LLM_STEPS, "train")

# Names the components may use for the same thing: an input named like any member of a group
# takes the value of the first member present among the available values.
ALIASES = {
    "data_dir": ["data_dir", "dataset_dir", "data"],
    "llm_base_url": ["llm_base_url", "base_url", "openai_base_url", "teacher_base_url", "judge_base_url"],
    "llm_model": ["llm_model", "teacher_model", "judge_model", "model_name"],
    "mlflow_parent_run_id": ["mlflow_parent_run_id", "parent_run_id"],
    "train_set": ["train_set", "training_set", "trainset", "train_data", "constructed"],
    "creatives": ["creatives", "generate.creatives"],
    "clusters": ["clusters", "cluster.clusters", "assignments"],
}


# Explicit sources for inputs whose names mean something else elsewhere in the DAG
# (step -> input -> available value): e.g. the teacher's `model` is the LLM name, not train's model.
STEP_INPUTS = {
    "dataset_construct": {"base_url": "llm_base_url", "model": "llm_model"},
    "gsb_eval": {"base_url": "llm_base_url", "model": "llm_model", "samples": "generate.creatives",
                 "clusters": "cluster.clusters", "dataset": "dataset"},
    "personalization_eval": {"model": "train.model", "clusters": "cluster.clusters", "matches": "match.matches",
                             "creatives": "generate.creatives", "train_set": "dataset_construct.training_set",
                             "judge_base_url": "llm_base_url", "judge_model": "llm_model"},
}


class WiringError(ValueError):
    pass


def load_component(step: str, index: int = 0):
    mod_name, names = COMPONENTS[step]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise WiringError(f"component for step {step!r} not found ({mod_name}): {e}") from e
    name = names[index]
    comp = getattr(mod, name, None)
    if comp is None or not hasattr(comp, "component_spec"):
        found = [n for n in dir(mod) if hasattr(getattr(mod, n), "component_spec")]
        raise WiringError(f"{mod_name} has no component {name!r} (found: {found})")
    return comp


def component_io(comp) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = comp.component_spec
    return dict(spec.inputs or {}), dict(spec.outputs or {})


def _is_artifact(type_: str) -> bool:
    return "." in str(type_) or "Artifact" in str(type_) or str(type_).startswith("system.")


def call(step: str, comp, pool: dict[str, Any], step_args: dict[str, Any],
         common_args: dict[str, Any] | None = None) -> dsl.PipelineTask:
    """Call ``comp`` with the inputs it declares: the step's own preset arguments (each must be an
    input of the component: a typo is an error), then the preset's common arguments, then ``pool``
    (pipeline parameters and upstream outputs, by name or alias)."""
    inputs, _ = component_io(comp)
    unknown = set(step_args) - set(inputs)
    if unknown:
        raise WiringError(f"step {step}: preset sets {sorted(unknown)}, which component {comp.name!r} does not "
                          f"take; its inputs: {sorted(inputs)}")
    common_args = common_args or {}
    explicit = STEP_INPUTS.get(step, {})
    kwargs, missing = {}, []
    for name, spec in inputs.items():
        if name in step_args:
            kwargs[name] = step_args[name]
            continue
        if name in common_args:
            kwargs[name] = common_args[name]
            continue
        if name in explicit:
            value = pool.get(explicit[name])
            if value is None:
                missing.append(f"{name} (from {explicit[name]})")
            else:
                kwargs[name] = value
            continue
        value = pool.get(name)
        if value is None:
            for group in ALIASES.values():
                if name in group:
                    value = next((pool[m] for m in group if pool.get(m) is not None), None)
                    break
        if value is not None:
            kwargs[name] = value
        elif not getattr(spec, "optional", False) and getattr(spec, "default", None) is None:
            missing.append(name)
    if missing:
        raise WiringError(f"step {step}: no value for required input(s) {missing}; "
                          f"available: {sorted(k for k, v in pool.items() if v is not None)}")
    return comp(**kwargs)


def _outputs(task: dsl.PipelineTask, step: str) -> dict[str, Any]:
    outs = {}
    for name in (task.component_spec.outputs or {}):
        outs[name] = task.outputs[name]
        outs[f"{step}.{name}"] = task.outputs[name]
    return outs


def cpu_threads(cpu: str) -> int:
    """Whole cores in a Kubernetes CPU quantity ("4", "2.5", "500m"), at least 1."""
    q = str(cpu).strip()
    cores = float(q[:-1]) / 1000 if q.endswith("m") else float(q)
    return max(1, int(cores))


def _configure(task: dsl.PipelineTask, step: str, preset: Preset, *, local: bool,
               parent_run_id: str | None) -> dsl.PipelineTask:
    task.set_display_name(step.replace("_", "-"))
    task.set_caching_options(True)
    if local:
        return task
    res = preset.resources.steps.get(step)
    if res is not None:
        if res.cpu:
            task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu)
        if res.memory:
            task.set_memory_request(res.memory).set_memory_limit(res.memory)
        if res.accelerator_limit:
            task.set_accelerator_type(res.accelerator_type or "nvidia.com/gpu")
            task.set_accelerator_limit(res.accelerator_limit)
            from kfp import kubernetes

            for k, v in preset.resources.gpu_node_selector.items():
                kubernetes.add_node_selector(task, label_key=k, label_value=v)
            for t in preset.resources.gpu_tolerations:
                kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator", "Equal"),
                                          value=t.get("value"), effect=t.get("effect"))
    from kfp import kubernetes

    r = preset.resources
    if res is not None and res.cpu:  # torch/OpenMP threads = the CPU limit, not the node's cores
        task.set_env_variable("OMP_NUM_THREADS", str(cpu_threads(res.cpu)))
    if r.data_pvc:
        kubernetes.mount_pvc(task, pvc_name=r.data_pvc, mount_path=r.data_mount)
    kubernetes.use_secret_as_env(task, secret_name=r.mlflow_secret_name,
                                 secret_key_to_env={k: k for k in r.mlflow_secret_keys})
    if step in LLM_STEPS:
        kubernetes.use_secret_as_env(task, secret_name=r.llm_secret_name,
                                     secret_key_to_env={k: k for k in r.llm_secret_keys})
    if step in STATE_STEPS and r.work_pvc:
        kubernetes.mount_pvc(task, pvc_name=r.work_pvc, mount_path=r.work_mount)
        task.set_env_variable("HLLM_STATE_DIR", f"{r.work_mount}/state")
    kubernetes.set_security_context(task, run_as_user=r.run_as_user, run_as_group=r.run_as_user,
                                    run_as_non_root=True)
    kubernetes.empty_dir_mount(task, volume_name="scratch", mount_path=r.scratch_mount)
    for k, v in r.pod_labels.items():
        kubernetes.add_pod_label(task, label_key=k, label_value=v)
    if parent_run_id:  # the MLflow parent run made by `hllm-creator submit`
        task.set_env_variable("HLLM_PARENT_RUN_ID", parent_run_id)
    return task


_ARTIFACT_CLASSES = {"system.Dataset": "Dataset", "system.Model": "Model", "system.Metrics": "Metrics",
                     "system.Markdown": "Markdown", "system.HTML": "HTML", "system.Artifact": "Artifact",
                     "system.ClassificationMetrics": "ClassificationMetrics"}
_PARAM_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool,
                "String": str, "Integer": int, "Float": float, "Boolean": bool}


def _py_type(type_: str):
    """Python annotation for a component output type (for the pipeline's NamedTuple outputs)."""
    t = str(type_)
    base = t.split("@")[0]
    if base in _ARTIFACT_CLASSES:
        return getattr(dsl, _ARTIFACT_CLASSES[base])
    if t in _PARAM_TYPES:
        return _PARAM_TYPES[t]
    return dsl.Artifact if _is_artifact(t) else str


def _final_outputs(comps) -> list[tuple[str, str, str, Any]]:
    """(field, step, output, annotation) for every output of generate, gsb_eval and
    personalization_eval: the pipeline's outputs, so the runner finds creatives.parquet, the GSB summary
    and the personalization report even when steps were cached."""
    fields = []
    for step in ("generate", "gsb_eval", "personalization_eval"):
        for name, spec in (comps[step].component_spec.outputs or {}).items():
            fields.append((f"{step}__{name}", step, name, _py_type(spec.type)))
    return fields


def _shard_inputs(embed_comp) -> tuple[str, str | None]:
    """How embed takes its shard: ``("spec", name)`` for one string "i/n" input, or
    ``("index", index_name, count_name)``-style ints; returns (mode, input name)."""
    inputs = component_io(embed_comp)[0]
    for name in ("shard", "shard_spec"):
        if name in inputs:
            return "spec", name
    for name in ("shard_index", "shard_id", "shard_idx"):
        if name in inputs:
            return "index", name
    raise WiringError(f"embed component takes no shard input (one of shard, shard_spec, shard_index); "
                      f"inputs: {sorted(inputs)}")


def build_pipeline(preset: Preset, *, local: bool = False, parent_run_id: str | None = None):
    """The pipeline function for ``preset``. ``local=True`` skips cluster-only settings (the local
    runner ignores them anyway; skipping keeps its log free of warnings)."""
    import typing

    comps = {s: load_component(s) for s in STEPS}
    merge = load_component("embed", 1)
    n = preset.n_embed_shards
    mode, shard_name = _shard_inputs(comps["embed"])
    shard_items = [f"{i}/{n}" for i in range(n)] if mode == "spec" else list(range(n))
    finals = _final_outputs(comps)
    Outputs = typing.NamedTuple("Outputs", [(f, t) for f, _, _, t in finals])

    default_data = "" if local else f"{preset.resources.data_mount}/amazon_scientific"

    def hllm_creator_pipeline(data_dir: str = default_data, dataset_uri: str = "", llm_base_url: str = "",
                              llm_model: str = preset.llm_model, mlflow_parent_run_id: str = ""):
        pool: dict[str, Any] = {"data_dir": data_dir, "llm_base_url": llm_base_url, "llm_model": llm_model,
                                "mlflow_parent_run_id": mlflow_parent_run_id}
        tasks: dict[str, dsl.PipelineTask] = {}
        # Components that take the dataset as an artifact (train: `dataset`) get it through an
        # importer of `dataset_uri` (the local runner passes the dataset dir; on a cluster an
        # object-store URI of the same data, e.g. s3://bucket/data/amazon_scientific).
        needs_ds = [s for s in STEPS if "dataset" in component_io(comps[s])[0]
                    and _is_artifact(component_io(comps[s])[0]["dataset"].type)]
        provides_ds = any("dataset" in component_io(comps[s])[1] for s in STEPS)
        if needs_ds and not provides_ds:
            imp = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset, reimport=False)
            imp.set_display_name("dataset")
            pool["dataset"] = imp.output

        def step(name: str) -> dsl.PipelineTask:
            args = dict(getattr(preset, name))
            if name == "personalization_eval" and "slot" in preset.generate:
                # the greedy swap must use the slot generate served with (medoid | mean)
                args.setdefault("slot", preset.generate["slot"])
            t = call(name, comps[name], pool, args, preset.common)
            _configure(t, name, preset, local=local, parent_run_id=parent_run_id)
            pool.update(_outputs(t, name))
            tasks[name] = t
            return t

        step("dataset_construct")
        step("train")
        with dsl.ParallelFor(items=shard_items, parallelism=n, name="embed-shards") as shard:
            shard_pool = {**pool, shard_name: shard, "n_shards": n, "num_shards": n, "shard_count": n}
            et = call("embed", comps["embed"], shard_pool, preset.embed, preset.common)
            _configure(et, "embed", preset, local=local, parent_run_id=parent_run_id)
        embed_outs = component_io(comps["embed"])[1]
        merge_inputs = component_io(merge)[0]
        art_in = [k for k, sp in merge_inputs.items() if _is_artifact(sp.type)]
        if len(art_in) != 1 or not embed_outs:
            raise WiringError(f"embed_merge must take exactly one list-of-artifacts input (has {art_in})")
        emb_out = next(k for k, sp in embed_outs.items() if _is_artifact(sp.type))
        mt = call("embed_merge", merge, {**pool, art_in[0]: dsl.Collected(et.outputs[emb_out])}, {})
        _configure(mt, "embed_merge", preset, local=local, parent_run_id=parent_run_id)
        mt.set_display_name("embed-merge")
        pool.update(_outputs(mt, "embed"))
        step("cluster")
        step("match")
        step("generate")
        step("gsb_eval")
        step("personalization_eval")
        return Outputs(*[tasks[st].outputs[o] for _, st, o, _ in finals])

    hllm_creator_pipeline.__annotations__["return"] = Outputs
    return dsl.pipeline(name=PIPELINE_NAME, description=f"HLLM-Creator personalized ad titles, preset "
                                                        f"{preset.name}: {preset.description}")(hllm_creator_pipeline)
