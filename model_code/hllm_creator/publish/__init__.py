"""From a pipeline run to live traffic (issue 17).

- ``bundle``: one serving bundle per run (model + inference outputs + item catalog + manifest),
  checked by loading it with the real serving loaders;
- ``publish``: assemble + check + register the bundle as one MLflow model version (alias candidate);
- ``rollout``: the KServe InferenceService patches of a canary rollout, its completion and rollback;
- ``ab``: deterministic A/B assignment, the exposure/feedback sink and the A/B readout.
"""
