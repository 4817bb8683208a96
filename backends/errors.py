"""The one exception tree of booagent-cluster (its root, and the branches of the nodes).

Every error carries the HTTP ``status_code`` the client sees and the OpenAI error ``type`` and
``code``; ``gateway.errors`` renders any of them as the OpenAI error body, and adds the branch
of errors a client causes (``gateway.errors.ClientError``: bad field, bad key, unknown model,
body too large).

    BooagentError
    ├── ClientError                     (gateway.errors) the caller's fault; never retried
    ├── PromptTooLong                   400, the prompt fits no member's context; names sizes
    ├── CapacityError                   the cluster is busy; carries ``retry_after``
    │   ├── QueueTimeout                429, waited too long for a free slot
    │   └── NoNodeAvailable             503, no node can serve the model right now
    ├── NodeError                       a node failed; carries ``node``
    │   ├── RetryableNodeError          another node (or a later try) may succeed
    │   │   ├── NodeUnreachable         connect refused, reset, DNS
    │   │   ├── NodeTimeout             connect, first token, stall or total limit
    │   │   ├── NodeOverloaded          429 from the node; may carry ``retry_after``
    │   │   ├── NodeServerError         5xx from the node
    │   │   └── NodeProtocolError       malformed SSE, stream ended without [DONE]
    │   └── NodeRejected                4xx from the node: the request itself is bad
    │       ├── ContextLengthExceeded   the prompt does not fit this member's context
    │       └── RequestFailed           the node failed this request inside its answer while
    │                                   staying healthy (400, ``request_failed``)
    ├── AllNodesFailed                  every attempt of the request-wide budget failed
    ├── StreamInterrupted               a node failed after the answer was committed
    ├── ModelFetchError                 a model could not be pulled into the cache (CLI side)
    │   ├── UnknownModel                the name is not in the model catalog
    │   ├── PackageMissing              pip could not download a part's wheel
    │   └── ChecksumMismatch            the assembled file's sha256 differs from the catalog's
    └── NodeProcessError                a local node process did not start (``booagent up``)

Only ``backends.http_errors`` translates foreign (aiohttp, httpx) exceptions into this tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class BooagentError(Exception):
    """Base of every error the gateway reports to a client.

    ``status_code`` and ``code`` are class defaults that an instance may override (a node's
    4xx keeps its own status; a failure made only of timeouts is a 504)."""

    status_code: int = 500
    type: ClassVar[str] = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class PromptTooLong(BooagentError):
    """The request's prompt (its messages and tools, as each member's template renders them)
    leaves no room for an answer in the context of any member that may answer it."""

    status_code = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"


class CapacityError(BooagentError):
    """The cluster cannot take the request now; ``retry_after`` is in seconds."""

    status_code = 503
    type = "server_error"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class QueueTimeout(CapacityError):
    """Every eligible node stayed busy for longer than the queue timeout."""

    status_code = 429
    type = "rate_limit_error"
    code = "queue_timeout"


class NoNodeAvailable(CapacityError):
    """No node carrying the wanted members is ready (down, loading, or breaker open)."""

    code = "no_node_available"


class NodeError(BooagentError):
    """A node failed to answer; ``node`` names it and ``reason`` is a short tag for logs.
    ``inside_answer`` marks a failure inside an answer the node had accepted, before any
    output: an error frame, or a stream that ended empty."""

    status_code = 502
    reason: ClassVar[str] = "node_error"

    def __init__(
        self,
        node: str,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        inside_answer: bool = False,
    ):
        super().__init__(f"node {node}: {message}", code=code, status_code=status_code)
        self.node = node
        self.inside_answer = inside_answer


class RetryableNodeError(NodeError):
    """Another node, or the same node later, may answer."""


class NodeUnreachable(RetryableNodeError):
    reason = "unreachable"


class NodeTimeout(RetryableNodeError):
    """A time limit fired; a node that timed out is not tried again in the same request."""

    status_code = 504
    reason = "timeout"


class NodeOverloaded(RetryableNodeError):
    status_code = 503
    reason = "overloaded"

    def __init__(self, node: str, message: str, *, retry_after: float | None = None):
        super().__init__(node, message)
        self.retry_after = retry_after


class NodeServerError(RetryableNodeError):
    reason = "server_error"


class NodeProtocolError(RetryableNodeError):
    reason = "protocol_error"


class NodeRejected(NodeError):
    """The node refused the request itself (4xx); its status and message reach the client."""

    type = "invalid_request_error"
    reason = "rejected"

    status_code = 400


class ContextLengthExceeded(NodeRejected):
    reason = "context_length"
    code = "context_length_exceeded"


class RequestFailed(NodeRejected):
    """A node failed this request after accepting it (an error inside the stream, or a
    stream that ended with no output) and answered its health check at once: the request's
    fault, not the node's (``llama_cpp.server`` reports a prompt longer than its context, a
    chat template or grammar it cannot use, this way). Not counted against the node."""

    reason = "request_failed"
    code = "request_failed"


class AllNodesFailed(BooagentError):
    """The request-wide attempt budget is spent; the client should not retry at once."""

    status_code = 502
    code = "all_nodes_failed"

    def __init__(self, message: str, *, failures: list[NodeError]):
        super().__init__(message)
        self.failures = failures
        self.retry_after: float | None = None
        if failures and all(isinstance(f, NodeTimeout) for f in failures):
            self.status_code = 504
        overloaded = [f for f in failures if isinstance(f, NodeOverloaded)]
        if overloaded and len(overloaded) == len(failures):
            self.status_code = 503
            self.retry_after = max(f.retry_after or 1.0 for f in overloaded)


class StreamInterrupted(BooagentError):
    """The node failed after the first token was sent; the stream ends with an error frame."""

    status_code = 502
    code = "stream_interrupted"


class ModelFetchError(BooagentError):
    """A model could not be placed in the cache; nothing half-written is left behind."""

    code = "model_fetch_failed"


class UnknownModel(ModelFetchError):
    """``name`` is not a key of the model catalog; ``known`` lists the keys that are."""

    code = "unknown_model"

    def __init__(self, name: str, known: Sequence[str]):
        super().__init__(f"unknown model {name!r}; known models: {', '.join(known)}")
        self.name = name


class PackageMissing(ModelFetchError):
    """pip could not download ``requirement``; ``pip_error`` is pip's last error line."""

    code = "package_missing"

    def __init__(self, requirement: str, pip_error: str):
        super().__init__(f"could not download package {requirement}: {pip_error}")
        self.requirement = requirement
        self.pip_error = pip_error


class ChecksumMismatch(ModelFetchError):
    """The bytes of ``filename`` do not hash to the sha256 the catalog pins."""

    code = "checksum_mismatch"

    def __init__(self, filename: str, *, expected: str, actual: str):
        super().__init__(f"{filename}: sha256 is {actual}, expected {expected}")
        self.filename = filename
        self.expected = expected
        self.actual = actual


class NodeProcessError(BooagentError):
    """A local node process could not start, exited before it was ready, or stayed unready.

    ``exit_code`` is the process's return code (negative: killed by that signal) when it
    exited; ``output`` holds the last lines it wrote, also shown in the message.
    """

    code = "node_process_failed"

    def __init__(
        self, node: str, message: str, *, exit_code: int | None = None, output: Sequence[str] = ()
    ):
        shown = "".join(f"\n    {line}" for line in output) if output else " (none)"
        super().__init__(f"node {node}: {message}; last output:{shown}")
        self.node = node
        self.exit_code = exit_code
        self.output = tuple(output)
