"""Fault injection for tests: a real loopback HTTP node that misbehaves on purpose."""
