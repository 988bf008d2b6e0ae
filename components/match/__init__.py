"""match component."""
