"""Deciding who answers: classify the request, then route (later: cascade, ensemble)."""
