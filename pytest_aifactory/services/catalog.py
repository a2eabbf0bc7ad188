"""The named services a profile and a fixture can ask for, and how overrides apply to them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.core.profiles import Profile, SettingValue
from pytest_aifactory.services import (
    embeddings,
    http,
    inference,
    objectstore,
    observability,
    slotted_llm,
    sql,
    synthetic_llm,
    vectordb,
    vllm,
)
from pytest_aifactory.services.spec import Resources, ServiceSpec

__all__ = ["CATALOG", "build_spec", "service_names"]


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """How to build one named service: its settings with their defaults, and a builder."""

    defaults: Mapping[str, SettingValue]
    build: Callable[[Mapping[str, SettingValue]], ServiceSpec]


CATALOG: dict[str, CatalogEntry] = {
    "http": CatalogEntry(http.DEFAULTS, http.build),
    "synthetic-llm": CatalogEntry(synthetic_llm.DEFAULTS, synthetic_llm.build),
    "slotted-llm": CatalogEntry(slotted_llm.DEFAULTS, slotted_llm.build),
    "llamacpp": CatalogEntry(inference.LLAMACPP, inference.llamacpp),
    "vllm": CatalogEntry(vllm.VLLM, vllm.vllm),
    "triton": CatalogEntry(inference.TRITON, inference.triton),
    "ollama": CatalogEntry(inference.OLLAMA, inference.ollama),
    "embeddings": CatalogEntry(embeddings.EMBEDDINGS, embeddings.embeddings),
    "postgres": CatalogEntry(sql.POSTGRES, sql.postgres),
    "s3": CatalogEntry(objectstore.S3, objectstore.s3),
    "milvus": CatalogEntry(vectordb.MILVUS, vectordb.milvus),
    "chroma": CatalogEntry(vectordb.CHROMA, vectordb.chroma),
    "qdrant": CatalogEntry(vectordb.QDRANT, vectordb.qdrant),
    "weaviate": CatalogEntry(vectordb.WEAVIATE, vectordb.weaviate),
    "pushgateway": CatalogEntry(observability.PUSHGATEWAY, observability.pushgateway),
    "prometheus": CatalogEntry(observability.PROMETHEUS, observability.prometheus),
}

SPEC_KEYS = frozenset({"image", "readiness_timeout_s", "env"})
RESOURCE_KEYS = frozenset(f.name for f in dataclasses.fields(Resources))


def service_names() -> list[str]:
    """Every service name the catalog knows."""
    return sorted(CATALOG)


def _entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise ServiceConfigError(f"unknown service {name!r}; known services: {', '.join(service_names())}") from None


def check_profile(profile: Profile) -> None:
    """Reject a profile naming services, or settings of services, the catalog does not know."""
    for name in (*profile.services, profile.llm):
        if name not in CATALOG:
            raise ServiceConfigError(
                f"{profile.source}: unknown service {name!r}; known services: {', '.join(service_names())}"
            )
    for name, override in profile.services.items():
        bad = set(override.settings) - set(CATALOG[name].defaults)
        if bad:
            valid = ", ".join(sorted(CATALOG[name].defaults)) or "(none)"
            raise ServiceConfigError(
                f"{profile.source}: services.{name}.settings has unknown key(s) {', '.join(sorted(bad))}; "
                f"valid: {valid}"
            )


def build_spec(name: str, profile: Profile, **overrides: Any) -> ServiceSpec:
    """The spec of service ``name`` under ``profile``, with per-call ``overrides``.

    Overrides are the service's own settings, resources (``cpus``, ``gpus``, ``mem_gb``,
    ``time_min``, ``partition``), ``image``, ``env`` or ``readiness_timeout_s``; the profile's
    ``services.NAME`` section applies first, the call's overrides last. The readiness timeout
    defaults to the larger of the service's and the profile's (a cluster queue can be slow).
    """
    entry = _entry(name)
    unknown = set(overrides) - set(entry.defaults) - SPEC_KEYS - RESOURCE_KEYS
    if unknown:
        valid = ", ".join(sorted({*entry.defaults, *SPEC_KEYS, *RESOURCE_KEYS}))
        raise ServiceConfigError(f"service {name!r} has no setting {', '.join(sorted(unknown))}; valid: {valid}")
    check_profile(profile)
    profiled = profile.override(name)
    settings = {**entry.defaults, **profiled.settings}
    settings.update({k: v for k, v in overrides.items() if k in entry.defaults})
    try:
        spec = entry.build(settings)
    except ServiceConfigError as exc:
        if profiled.settings and profile.source:
            raise ServiceConfigError(f"{profile.source}: {exc}") from None
        raise
    resources = {
        key: value for key in RESOURCE_KEYS if (value := overrides.get(key, getattr(profiled, key))) is not None
    }
    return spec.with_overrides(
        **resources,
        image=overrides.get("image", profiled.image or spec.image),
        env={**spec.env, **profiled.env, **overrides.get("env", {})},
        readiness_timeout_s=float(
            overrides.get(
                "readiness_timeout_s",
                profiled.readiness_timeout_s or max(spec.readiness_timeout_s, profile.readiness_timeout_s),
            )
        ),
    )
