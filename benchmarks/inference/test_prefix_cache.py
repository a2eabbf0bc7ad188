"""What the prefix cache is worth: the same prompts with shared prefixes and with unique ones.

Both runs send prompts of the same lengths in the same order; only whether the prefix is
shared differs. llama.cpp reuses the evaluated prefix of the previous prompt (one request at
a time here), vLLM its automatic prefix cache (any concurrency). The shared run's result
carries ``p50_ttft_vs_unique``, its p50 TTFT over the unique run's, in the report; on vLLM
also the server's ``prefix_cache_hit_rate``, which must be above 0.

On vLLM (``--aif-llm vllm``) the same two runs go to a second vLLM started with prefix
caching off (the ``vllm`` service's ``prefix_caching`` setting): its hit rate must be absent
or 0, and its ``p50_ttft_vs_unique`` shows what shared prefixes are worth without the cache.
"""

from __future__ import annotations

import os

import pytest

SPEC = "shared-prefix:prefixes={prefixes},prefix={prefix},suffix=16,out=4,share={share}"
# (prefix_tokens, prefix_requests) unless the profile sets them: prefixes long enough that their
# prefill outweighs the rest of a request, and as many requests as CI can afford (the tiny
# llama.cpp model takes seconds per 1,000 prompt tokens; vLLM a tenth of a second per 2,048).
SIZES = {"vllm": (2048, 24)}
SMALL = (256, 6)


def _figures(readme_figures, service, unique, shared, caching: str, load_average: float) -> str:
    command = f"pytest benchmarks/inference/test_prefix_cache.py --aif-llm {service.name} --readme-figures"
    hits = shared.metrics().get("prefix_cache_hit_rate")
    return (
        f"{readme_figures.provenance(command, load_average)}\n\n"
        f"{service.name} ({service.backend}){caching}, {shared['requests']:.0f} requests each, "
        f"{shared['mean_input_tokens']:,.0f} prompt tokens: p50 TTFT unique {unique['p50_ttft_ms']:,.1f} ms, "
        f"shared {shared['p50_ttft_ms']:,.1f} ms (ratio {shared['p50_ttft_vs_unique']:.2f}); server prefix-cache "
        f"hit rate {'not available' if hits is None else f'{hits:.2f}'}."
    )


def _unique_then_shared(service, aif_load, aif_vars, caching: str):
    """The unique run and the shared run; the shared result carries their p50 TTFT ratio."""
    tokens, requests = SIZES.get(service.name, SMALL)
    sizes = {"prefixes": aif_vars("prefix_groups", 1), "prefix": aif_vars("prefix_tokens", tokens)}
    unique, shared = (
        aif_load.openai(
            service,
            prompts=SPEC.format(share=share, **sizes),
            concurrency=aif_vars("prefix_concurrency", 1),
            count=aif_vars("prefix_requests", requests),
            warmup=1,
            label=f"prefix share={share}{caching}",
        )
        for share in (0, 1)
    )
    shared.scalars["p50_ttft_vs_unique"] = shared["p50_ttft_ms"] / unique["p50_ttft_ms"]
    return unique, shared


@pytest.mark.slo("error_rate == 0")
def test_shared_prefix_lowers_ttft(llm_service, aif_load, aif_vars, readme_figures):
    """Shared prefixes must answer measurably sooner than unique ones of the same length."""
    load_average = os.getloadavg()[0]
    unique, shared = _unique_then_shared(llm_service, aif_load, aif_vars, "")
    caching = ", caching on" if llm_service.name == "vllm" else ""
    readme_figures.publish("prefix-cache", _figures(readme_figures, llm_service, unique, shared, caching, load_average))
    if "prefix_cache_hit_rate" in shared.scalars:  # the server says how often its cache answered (vLLM)
        assert shared["prefix_cache_hit_rate"] > 0
    ratio = shared["p50_ttft_vs_unique"]
    assert ratio < aif_vars("prefix_max_ttft_ratio", 0.8), f"shared prefixes: p50 TTFT x{ratio:.2f} of unique ones"


@pytest.mark.slo("error_rate == 0")
def test_vllm_without_prefix_caching(aif_profile, aif_service, aif_load, aif_vars, readme_figures):
    """With vLLM's prefix caching off its cache answers nothing (its hit rate absent or 0)."""
    if aif_profile.llm != "vllm":
        pytest.skip(f"prefix caching off is a vLLM setting; the LLM here is {aif_profile.llm} (use --aif-llm vllm)")
    load_average = os.getloadavg()[0]
    service = aif_service("vllm", prefix_caching=False)
    unique, shared = _unique_then_shared(service, aif_load, aif_vars, ", caching off")
    readme_figures.publish(
        "prefix-cache-off", _figures(readme_figures, service, unique, shared, ", caching off", load_average)
    )
    assert shared.metrics().get("prefix_cache_hit_rate", 0) == 0
