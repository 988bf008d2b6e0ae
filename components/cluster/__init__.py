"""cluster component."""
