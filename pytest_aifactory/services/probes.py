"""Readiness probes: a service is ready when it can serve, not when its port is open."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
from types import SimpleNamespace

import httpx

from pytest_aifactory.services.spec import CallProbe, CommandProbe, HttpProbe, Probe, RunningService, TcpProbe, render

__all__ = ["check_ready"]

_TIMEOUT_S = 5.0


def check_ready(probe: Probe | None, service: RunningService) -> str | None:
    """None when ``service`` passes ``probe``; otherwise why it is not ready yet."""
    if probe is None:
        return None
    if isinstance(probe, HttpProbe):
        return _http(probe, service)
    if isinstance(probe, TcpProbe):
        return _tcp(probe, service)
    if isinstance(probe, CallProbe):
        return _call(probe, service)
    return _command(probe, service)


def _call(probe: CallProbe, service: RunningService) -> str | None:
    module, _, name = probe.target.partition(":")
    function = getattr(importlib.import_module(module), name)
    try:
        reason = function(service)
    except Exception as exc:  # any failure of the client means "not ready yet"
        return f"{probe.target}: {type(exc).__name__}: {str(exc)[:300]}"
    return None if reason is None else str(reason)


def _http(probe: HttpProbe, service: RunningService) -> str | None:
    url = service.url(probe.path, port=probe.port)
    try:
        response = httpx.request(probe.method, url, json=probe.json, headers=dict(probe.headers), timeout=_TIMEOUT_S)
    except Exception as exc:  # httpx's errors, and httpcore's when re-imported modules left them unmapped
        return f"{probe.method} {url}: {type(exc).__name__}: {exc}"
    if response.status_code not in probe.expect_status:
        return f"{probe.method} {url}: HTTP {response.status_code} {response.text[:200]!r}"
    return None


def _tcp(probe: TcpProbe, service: RunningService) -> str | None:
    address = (service.host, service.ports[probe.port])
    try:
        with socket.create_connection(address, timeout=_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"TCP connect {address[0]}:{address[1]}: {exc}"


def _command(probe: CommandProbe, service: RunningService) -> str | None:
    context = {"host": service.host, "ports": SimpleNamespace(**service.ports), "python": sys.executable}
    argv = [render(word, context) for word in probe.argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(argv)}: {exc}"
    if done.returncode != 0:
        return f"{' '.join(argv)} exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
    return None
