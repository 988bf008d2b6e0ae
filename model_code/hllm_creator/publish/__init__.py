"""From a pipeline run to live traffic.

- ``bundle``: one serving bundle per run (model + inference outputs + item catalog + manifest),
  checked by loading it with the real serving loaders (the format a server reads: ``serving.bundle``);
- ``ad_embeddings``: the bundle's precomputed item embeddings;
- ``publish``: assemble + check + register the bundle as one MLflow model version (alias candidate);
- ``rollout``: the KServe InferenceService patches of a canary rollout, its completion and rollback;
- ``refresh``: a new bundle version from a served bundle + an ad feed, without retraining;
- ``ab``: the A/B readout (the assignment and the exposure/feedback sink the predictor writes:
  ``serving.experiment``).
"""
