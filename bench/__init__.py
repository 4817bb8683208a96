"""Benchmarks of the gateway: overhead against a fast upstream, and memory under long load."""
