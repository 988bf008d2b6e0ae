"""The GPU check, for the few minutes a GPU is lent."""
