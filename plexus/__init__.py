"""Plexus: a fast universal LLM API gateway."""
