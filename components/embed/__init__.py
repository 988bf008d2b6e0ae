"""embed component."""
