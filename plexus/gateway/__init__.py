"""One request's pipeline: dispatch, route, prepare, attempt, relay (see handler.py)."""
