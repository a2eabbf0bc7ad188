"""``http``: a plain static HTTP server (Python's http.server), the simplest real service."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

DEFAULTS: dict[str, SettingValue] = {"index_text": "pytest-aifactory http service\n"}


def build(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Serve a scratch folder holding ``index.txt`` (its text set by ``index_text``)."""
    return ServiceSpec(
        name="http",
        setup=(("{python}", "-c", f"open('index.txt', 'w').write({str(settings['index_text'])!r})"),),
        command=("{python}", "-m", "http.server", "{ports.http}", "--bind", "{host}", "--directory", "{workdir}"),
        probe=HttpProbe(path="/index.txt"),
        readiness_timeout_s=30,
    )
