"""Inference servers: llama.cpp (the local default), Triton and Ollama (vLLM: ``services.vllm``).

Each readiness probe means "can serve": llama.cpp answers a first one-token completion,
Triton reports its model ready, Ollama answers on its root.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import HttpProbe, Resources, ServiceSpec

__all__ = ["LLAMACPP", "OLLAMA", "TRITON", "llamacpp", "ollama", "triton"]

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
            "--workspace={tmp}/pytriton",
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
            "metrics": "triton",
            "metrics_port": "metrics",
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
