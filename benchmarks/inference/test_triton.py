"""Triton Inference Server: tensor inference over HTTP and gRPC, and streaming generation."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.slo("error_rate == 0", "p99_latency_ms <= {triton_p99_latency_ms}")
def test_infer_concurrency(triton_service, aif_load, aif_vars, protocol):
    """Dynamically batched MLP inference at a fixed concurrency."""
    result = aif_load.triton_infer(
        triton_service,
        protocol=protocol,
        concurrency=aif_vars("triton_concurrency", 8),
        count=aif_vars("triton_requests", 400),
        warmup=20,
    )
    assert result["request_s"] > 0


@pytest.mark.slo("error_rate == 0", "p99_ttft_ms <= {triton_p99_ttft_ms}", "mean_itl_ms >= 1")
def test_generate_stream_open_loop(triton_service, aif_load, aif_vars):
    """Triton's generate_stream endpoint under Poisson arrivals."""
    aif_load.triton_generate(
        triton_service, rate=aif_vars("triton_generate_rate", 10), count=aif_vars("triton_generate_requests", 60)
    )
