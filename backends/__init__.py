"""Talking to llama.cpp nodes: the Backend seam, HTTP client, health, admission, failover."""
