"""The HLLM-Creator pipeline, edge by edge:

    dataset (importer) -> dataset-construct -> train -> embed (ParallelFor over user shards)
    -> embed-merge -> cluster -> match -> generate -> gsb-eval, personalization-eval -> publish

``build_pipeline(preset)`` returns a ``@dsl.pipeline`` function. Each step is one call whose
artifact inputs are named outputs of the steps above it (the DAG is the function body), and whose
remaining arguments are the preset's section for that step (compiled into the YAML as constants;
recompile with other values). A preset key that is not an input of the step's component, or that
names an input the pipeline wires itself, is an error (``check_preset``). The run's parameters are
``dataset_uri``, ``llm_base_url`` and ``llm_model``.

Images: each component names its own (``components/_images.py``: the cpu image, the gpu image for
the GPU steps, set at compile time by HLLM_IMAGE_REGISTRY/TAG/DIGEST_*). ``build_pipeline(...,
image=X)`` runs every step in image X instead (``with_image``): the local DockerRunner runs the
whole DAG in the cpu image (``run_local(..., docker=DockerSettings(image=...))``, the container test).

The dataset is ONE artifact (``Input[Dataset]`` in every step that reads it), imported once from
``dataset_uri``. On a cluster the importer downloads it into the pipeline's workspace (a PVC that
KFP creates per run, ``PipelineConfig(workspace=...)``; ``download_to_workspace=True``): every
step then reads the same files from the PVC instead of downloading them again. Locally the URI is
the dataset dir itself.

Run context (the MLflow parent run): one channel, the task environment (docs/pipeline.md). The
step's run nests under ``$HLLM_PARENT_RUN_ID`` (``tracking.step_run``); locally the runner exports
it and the KFP subprocesses inherit it, on a cluster ``submit`` compiles it into every task's env.
It is never a component input, so it is not part of any cache key.

Cluster settings (``resources`` of the preset): CPU/memory requests and limits, GPU requests via
``set_accelerator_type``/``set_accelerator_limit``, GPU node selector + toleration; via
kfp-kubernetes: the MLflow client secret as env on every task, the LLM secret (OPENAI_*) only on
``LLM_STEPS``, the durable work PVC only on ``STATE_STEPS``, the shared data PVC only on train (a
TrainJob stages the dataset there), a non-root security context, an emptyDir for /tmp, the MLflow
NetworkPolicy's pod label, and OMP_NUM_THREADS from the CPU limit. The local runner skips them.
"""

import typing
from typing import Any

from kfp import dsl

from hllm_creator_kfp.components.cluster.component import cluster
from hllm_creator_kfp.components.dataset_construct.component import dataset_construct
from hllm_creator_kfp.components.embed.component import embed, embed_merge
from hllm_creator_kfp.components.generate.component import generate
from hllm_creator_kfp.components.gsb_eval.component import gsb_eval
from hllm_creator_kfp.components.match.component import match
from hllm_creator_kfp.components.personalization_eval.component import personalization_eval
from hllm_creator_kfp.components.publish.component import publish
from hllm_creator_kfp.components.train.component import train
from hllm_creator_kfp.pipelines.presets import STEPS, Preset

PIPELINE_NAME = "hllm-creator"

# The steps that call an LLM (teacher / judge): the only ones that get the LLM secret on a cluster.
LLM_STEPS = ("dataset_construct", "gsb_eval", "personalization_eval")
# The steps whose state must survive a killed pod (reply cache, training checkpoints): they mount
# the durable work PVC and get HLLM_STATE_DIR.
STATE_STEPS = (*LLM_STEPS, "train")

# step -> its component, and the inputs the pipeline wires itself (edges and run parameters): a
# preset may set any OTHER input of the component.
COMPONENTS = {"dataset_construct": dataset_construct, "train": train, "embed": embed, "cluster": cluster,
              "match": match, "generate": generate, "gsb_eval": gsb_eval,
              "personalization_eval": personalization_eval, "publish": publish}
WIRED = {
    "dataset_construct": {"dataset", "base_url", "model"},
    "train": {"dataset", "train_set", "register"},
    "embed": {"model", "dataset", "shard"},
    "cluster": {"embeddings"},
    "match": {"model", "dataset", "clusters"},
    "generate": {"model", "dataset", "clusters", "matches"},
    "gsb_eval": {"samples", "dataset", "clusters", "base_url", "model"},
    "personalization_eval": {"model", "dataset", "clusters", "matches", "creatives", "train_set",
                             "judge_base_url", "judge_model"},
    "publish": {"model", "dataset", "clusters", "matches", "creatives", "gsb_report", "personalization_report"},
}
# the pipeline's outputs: the runner finds creatives.parquet, the GSB summary and the personalization
# report there even when the steps were cached
OUTPUTS = [("generate__creatives", dsl.Dataset), ("generate__metrics", dsl.Metrics),
           ("gsb_eval__report", dsl.Dataset), ("gsb_eval__metrics", dsl.Metrics),
           ("personalization_eval__report", dsl.Dataset), ("personalization_eval__metrics", dsl.Metrics),
           ("publish__bundle", dsl.Model)]
Outputs = typing.NamedTuple("Outputs", OUTPUTS)


class WiringError(ValueError):
    pass


def check_preset(preset: Preset) -> dict[str, dict[str, Any]]:
    """The preset's arguments per step, after checking that each names a real input of the step's
    component that the pipeline does not wire itself; a typo is an error that lists the choices."""
    args = {}
    for step in STEPS:
        comp = COMPONENTS[step]
        inputs = set(comp.component_spec.inputs or {})
        section = dict(getattr(preset, step))
        unknown = set(section) - inputs
        if unknown:
            raise WiringError(f"step {step}: preset sets {sorted(unknown)}, which component {comp.name!r} does not "
                              f"take; it takes: {sorted(inputs - WIRED[step])}")
        wired = set(section) & WIRED[step]
        if wired:
            raise WiringError(f"step {step}: preset sets {sorted(wired)}, which the pipeline wires from upstream "
                              f"steps or run parameters")
        args[step] = section
    return args


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
    if step == "train" and r.data_pvc:  # a TrainJob's pods read the staged dataset from this RWX volume
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



def with_image(component, image: str):
    """A copy of ``component`` whose container runs ``image``: the same code, command, inputs and
    outputs (the component's own image, e.g. the gpu image, is left as it is)."""
    import copy

    if not image or not isinstance(image, str):
        raise ValueError(f"image must be a non-empty image reference, got {image!r}")
    c = copy.copy(component)
    c.component_spec = copy.deepcopy(component.component_spec)
    c.component_spec.implementation.container.image = image
    return c


def build_pipeline(preset: Preset, *, local: bool = False, parent_run_id: str | None = None,
                   image: str | None = None):
    """The pipeline function for ``preset``. ``local=True`` skips cluster-only settings (the local
    runner ignores them anyway; skipping keeps its log free of warnings). ``parent_run_id``: the
    MLflow parent run, compiled into every task's env (``hllm-creator submit``). ``image``: every
    step runs in this image instead of its component's own (``with_image``)."""
    a = check_preset(preset)
    comps = {**COMPONENTS, "embed_merge": embed_merge}
    if image:
        comps = {k: with_image(c, image) for k, c in comps.items()}
    n = preset.n_embed_shards
    shards = [f"{i}/{n}" for i in range(n)]
    train_args = dict(a["train"])
    if train_args.get("launcher") == "trainjob":  # the TrainJob's pods run the train step's own image, as
        # resolved here at compile time (registry, tag or digest pin), unless the preset names another
        train_args.setdefault("trainjob_image", comps["train"].component_spec.implementation.container.image)
    # An edge, not a preset rewrite: personalization-eval's greedy slot swap fills the slot the way
    # generate served (medoid | mean). A preset's own personalization_eval.slot still wins: evaluating
    # another slot than the served one is a deliberate experiment.
    pers_args = dict(a["personalization_eval"])
    if "slot" in a["generate"]:
        pers_args.setdefault("slot", a["generate"]["slot"])

    def configure(task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
        return _configure(task, step, preset, local=local, parent_run_id=parent_run_id)

    def hllm_creator_pipeline(dataset_uri: str, llm_base_url: str = "",
                              llm_model: str = preset.llm_model) -> Outputs:
        data = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset, reimport=False,
                            download_to_workspace=not local)
        data.set_display_name("dataset")
        dataset = data.output

        c = comps
        construct = configure(c["dataset_construct"](dataset=dataset, base_url=llm_base_url, model=llm_model,
                                                     **a["dataset_construct"]), "dataset_construct")
        training_set = construct.outputs["training_set"]
        # the run registers ONE version, the serving bundle (publish); the bare model dir is not servable
        trained = configure(c["train"](dataset=dataset, train_set=training_set, register=False, **train_args),
                            "train")
        model = trained.outputs["model"]
        with dsl.ParallelFor(items=shards, parallelism=n, name="embed-shards") as shard:
            shard_emb = configure(c["embed"](model=model, dataset=dataset, shard=shard, **a["embed"]), "embed")
        merged = configure(c["embed_merge"](shards=dsl.Collected(shard_emb.outputs["embeddings"])), "embed_merge")
        clustered = configure(c["cluster"](embeddings=merged.outputs["embeddings"], **a["cluster"]), "cluster")
        clusters = clustered.outputs["clusters"]
        matched = configure(c["match"](model=model, dataset=dataset, clusters=clusters, **a["match"]), "match")
        matches = matched.outputs["matches"]
        generated = configure(c["generate"](model=model, dataset=dataset, clusters=clusters, matches=matches,
                                            **a["generate"]), "generate")
        creatives = generated.outputs["creatives"]
        gsb = configure(c["gsb_eval"](samples=creatives, dataset=dataset, clusters=clusters, base_url=llm_base_url,
                                      model=llm_model, **a["gsb_eval"]), "gsb_eval")
        pers = configure(c["personalization_eval"](model=model, dataset=dataset, clusters=clusters, matches=matches,
                                                   creatives=creatives, train_set=training_set,
                                                   judge_base_url=llm_base_url, judge_model=llm_model,
                                                   **pers_args), "personalization_eval")
        published = configure(c["publish"](model=model, dataset=dataset, clusters=clusters, matches=matches,
                                           creatives=creatives, gsb_report=gsb.outputs["report"],
                                           personalization_report=pers.outputs["report"], **a["publish"]),
                              "publish")
        return Outputs(generated.outputs["creatives"], generated.outputs["metrics"], gsb.outputs["report"],
                       gsb.outputs["metrics"], pers.outputs["report"], pers.outputs["metrics"],
                       published.outputs["bundle"])

    config = None if local else dsl.PipelineConfig(workspace=preset.resources.workspace())
    return dsl.pipeline(name=PIPELINE_NAME, pipeline_config=config,
                        description=f"HLLM-Creator personalized ad titles, preset {preset.name}: "
                                    f"{preset.description}")(hllm_creator_pipeline)
