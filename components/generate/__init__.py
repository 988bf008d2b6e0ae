"""generate component."""
