"""The KFP glue of hllm-creator: ``hllm_creator_kfp.components`` (one thin @dsl.component per step,
the repo's ``components/``) and ``hllm_creator_kfp.pipelines`` (the DAG, presets, runners: ``pipelines/``).
The library ``hllm_creator`` never imports this package."""
