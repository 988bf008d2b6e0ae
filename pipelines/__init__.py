"""The KFP pipeline: DAG, presets, local runner, compile and submit."""
