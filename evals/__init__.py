"""The evaluation harness behind `booagent eval`: a task suite with checkable answers.

``items`` loads the suite (``data/*.jsonl``) and splits it into dev and test; ``tools``
describes tool items (the tools offered, the earlier turns, the acceptable calls); ``score``
judges one answer, its text and its tool calls; ``sandbox`` runs code answers against hidden
tests; ``client`` asks a model through the gateway's HTTP API; ``cache`` keeps every answer on
disk; ``runner`` ties these together into per-item records; ``report`` turns records into the
table, the markdown report and the chart. It talks to the gateway only over HTTP, like any
other client.
"""
