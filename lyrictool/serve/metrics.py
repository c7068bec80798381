"""Prometheus metrics of the server: a registry per app (tests build many apps in one process)."""

from __future__ import annotations


class Metrics:
    def __init__(self, queue_depth):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lyrictool_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("lyrictool_request_latency_seconds", "Request latency by route.", ["route"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.queue_depth = Gauge("lyrictool_queue_depth", "Requests waiting for the model.", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
        self.tokens = Counter("lyrictool_generated_tokens", "Tokens generated.", registry=self.registry)
        self.batch_size = Histogram("lyrictool_batch_sequences", "Sequences per generate call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.batch_seconds = Histogram("lyrictool_batch_seconds", "Seconds per generate call.",
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32), registry=self.registry)

    def on_batch(self, sequences: int, seconds: float) -> None:
        self.batch_size.observe(sequences)
        self.batch_seconds.observe(seconds)
