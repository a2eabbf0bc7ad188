"""What the prefix cache is worth: the same prompts with shared prefixes and with unique ones.

Both runs send prompts of the same lengths in the same order; only whether the prefix is
shared differs. llama.cpp reuses the evaluated prefix of the previous prompt (one request at
a time here), vLLM its automatic prefix cache (any concurrency). The shared run's result
carries ``p50_ttft_vs_unique``, its p50 TTFT over the unique run's, in the report.
"""

from __future__ import annotations

import pytest


@pytest.mark.slo("error_rate == 0")
def test_shared_prefix_lowers_ttft(llm_service, aif_load, aif_vars):
    """Shared prefixes must answer measurably sooner than unique ones of the same length."""
    spec = "shared-prefix:prefixes={prefixes},prefix={prefix},suffix=16,out=4,share={share}"
    sizes = {"prefixes": aif_vars("prefix_groups", 1), "prefix": aif_vars("prefix_tokens", 256)}
    runs = {
        share: aif_load.openai(
            llm_service,
            prompts=spec.format(share=share, **sizes),
            concurrency=aif_vars("prefix_concurrency", 1),
            count=aif_vars("prefix_requests", 6),
            warmup=1,
            label=f"prefix share={share}",
        )
        for share in (0, 1)
    }
    ratio = runs[1]["p50_ttft_ms"] / runs[0]["p50_ttft_ms"]
    runs[1].scalars["p50_ttft_vs_unique"] = ratio
    assert ratio < aif_vars("prefix_max_ttft_ratio", 0.8), f"shared prefixes: p50 TTFT x{ratio:.2f} of unique ones"
