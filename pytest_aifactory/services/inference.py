"""Inference servers: llama.cpp (the local default), vLLM, Triton and Ollama.

Each readiness probe means "can serve": llama.cpp answers a first one-token completion,
vLLM its ``/health`` (up once the engine has loaded the model), Triton reports its model
ready, Ollama answers on its root.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import HttpProbe, Resources, ServiceSpec

__all__ = ["LLAMACPP", "OLLAMA", "TRITON", "VLLM", "llamacpp", "ollama", "triton", "vllm"]

LLAMACPP: dict[str, SettingValue] = {
    "model": "",
    "model_name": "tiny-llama",
    "n_ctx": 8192,
    "threads": 1,
    "tiny_dim": 64,
    "tiny_layers": 2,
}


def llamacpp(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python); without ``model``, on a tiny generated GGUF."""
    model = str(settings["model"])
    setup: tuple[tuple[str, ...], ...] = ()
    if not model:
        model = "{workdir}/tiny-llama.gguf"
        setup = (
            (
                "{python}",
                "-m",
                "pytest_aifactory.services.tiny_gguf",
                model,
                f"--dim={settings['tiny_dim']}",
                f"--layers={settings['tiny_layers']}",
                f"--context={settings['n_ctx']}",
            ),
        )
    name = str(settings["model_name"])
    return ServiceSpec(
        name="llamacpp",
        setup=setup,
        command=(
            "{python}",
            "-m",
            "llama_cpp.server",
            "--model",
            model,
            "--model_alias",
            name,
            "--host",
            "{host}",
            "--port",
            "{ports.http}",
            "--n_ctx",
            str(settings["n_ctx"]),
            "--n_threads",
            str(settings["threads"]),
            "--interrupt_requests",  # by default a new request cuts the running one short
            "False",
        ),
        probe=HttpProbe(path="/v1/completions", method="POST", json={"prompt": "ready?", "max_tokens": 1}),
        resources=Resources(cpus=int(settings["threads"])),
        readiness_timeout_s=120,
        # A random-weight model emits EOS at random: forbid it so that outputs have the asked length.
        meta={"protocol": "openai", "model": name, "extra_body": '{"logit_bias": {"2": -100}}'},
    )


VLLM: dict[str, SettingValue] = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "served_model_name": "",
    "api_key_env": "AIF_VLLM_API_KEY",
    "max_model_len": 8192,
    "gpu_memory_utilization": 0.9,
    "extra_args": "",
}


def vllm(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """``vllm serve MODEL`` with tensor parallelism over the job's GPUs; the API key from the environment."""
    name = str(settings["served_model_name"] or settings["model"])
    key_env = str(settings["api_key_env"])
    return ServiceSpec(
        name="vllm",
        command=(
            "vllm",
            "serve",
            str(settings["model"]),
            "--served-model-name",
            name,
            "--host",
            "{host}",
            "--port",
            "{ports.http}",
            "--tensor-parallel-size",
            "{gpus}",
            "--max-model-len",
            str(settings["max_model_len"]),
            "--gpu-memory-utilization",
            str(settings["gpu_memory_utilization"]),
            *str(settings["extra_args"]).split(),
        ),
        env_from={"VLLM_API_KEY": key_env} if key_env else {},
        probe=HttpProbe(path="/health"),
        resources=Resources(cpus=32, gpus=4, time_min=120, partition="gpu"),
        image="docker://vllm/vllm-openai:v0.8.5",
        readiness_timeout_s=1800,
        meta={"protocol": "openai", "model": name, "api_key_env": key_env, "extra_body": '{"ignore_eos": true}'},
    )


TRITON: dict[str, SettingValue] = {"model_repository": "", "dim": 256, "itl_ms": 2.0}


def triton(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Triton Inference Server: ``tritonserver`` on a model repository, or, without one, pytriton on CPU."""
    repository = str(settings["model_repository"])
    ports = ("http", "grpc", "metrics")
    if repository:
        command: tuple[str, ...] = (
            "tritonserver",
            f"--model-repository={repository}",
            "--http-address={host}",
            "--http-port={ports.http}",
            "--grpc-address={host}",
            "--grpc-port={ports.grpc}",
            "--metrics-address={host}",
            "--metrics-port={ports.metrics}",
        )
        probe = HttpProbe(path="/v2/health/ready")
    else:
        command = (
            "{python}",
            "-m",
            "pytest_aifactory.services.pytriton_server",
            "--host={host}",
            "--http-port={ports.http}",
            "--grpc-port={ports.grpc}",
            "--metrics-port={ports.metrics}",
            f"--dim={settings['dim']}",
            f"--itl-ms={settings['itl_ms']}",
        )
        probe = HttpProbe(path="/v2/models/tiny_generate/ready")  # bound last: every model is ready
    return ServiceSpec(
        name="triton",
        command=command,
        ports=ports,
        probe=probe,
        readiness_timeout_s=180,
        stop_timeout_s=30,
        meta={
            "protocol": "triton",
            "infer_model": "mlp",
            "generate_model": "tiny_generate",
            "dim": str(settings["dim"]),
        },
    )


OLLAMA: dict[str, SettingValue] = {"model": "llama3.1:8b", "models_dir": ""}


def ollama(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """``ollama serve`` (cluster profiles; models must already be in ``models_dir``)."""
    return ServiceSpec(
        name="ollama",
        command=("env", "OLLAMA_HOST={host}:{ports.http}", "ollama", "serve"),
        env={"OLLAMA_MODELS": str(settings["models_dir"])} if settings["models_dir"] else {},
        probe=HttpProbe(path="/"),
        resources=Resources(cpus=16, gpus=1),
        image="docker://ollama/ollama:0.6.5",
        readiness_timeout_s=600,
        meta={"protocol": "openai", "model": str(settings["model"])},
    )
