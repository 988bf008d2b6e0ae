"""KFP components: one folder per step, each a thin @dsl.component over the library."""
