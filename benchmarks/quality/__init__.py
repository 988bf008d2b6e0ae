"""Quality analyses: recommendation, cold start and audience fit against baselines and bounds."""
