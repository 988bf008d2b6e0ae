"""Backbone loading and LLM clients."""
