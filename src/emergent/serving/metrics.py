"""Prometheus metrics of the service, in a registry per app (so tests can build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "emergent_requests", "Requests by task and HTTP status", ["task", "status"], registry=r
        )
        self.latency = Histogram(
            "emergent_request_latency_seconds",
            "Request latency",
            ["task"],
            buckets=LATENCY,
            registry=r,
        )
        self.queue_wait = Histogram(
            "emergent_queue_wait_seconds",
            "Time a text waited for its batch",
            ["task"],
            buckets=LATENCY,
            registry=r,
        )
        self.batch_size = Histogram(
            "emergent_batch_size",
            "Texts per ONNX Runtime call",
            ["task"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.tokens = Histogram(
            "emergent_tokens_per_text",
            "Tokens per text",
            ["task"],
            buckets=(4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.unknown = Histogram(
            "emergent_unknown_token_share",
            "Share of unknown tokens per text",
            ["task"],
            buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.confidence = Histogram(
            "emergent_prediction_confidence",
            "Top-class probability / mean entity score",
            ["task"],
            buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.labels = Counter(
            "emergent_predicted_labels", "Predicted labels", ["task", "label"], registry=r
        )
        self.queue_depth = Gauge(
            "emergent_queue_depth", "Texts waiting per task", ["task"], registry=r
        )
        self.store_dropped = Counter(
            "emergent_store_dropped", "Records not stored (writer backlog full)", registry=r
        )
        self.model_info = Gauge(
            "emergent_model_info",
            "Served model version (1 = current)",
            ["task", "model", "version", "alias"],
            registry=r,
        )
