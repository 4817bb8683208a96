"""Deciding who answers: classify the request, then route, cascade, ensemble or program."""
