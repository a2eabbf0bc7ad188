"""Checks of a service's settings shared by the service families."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.core.profiles import SettingValue

__all__ = ["choice", "switch"]


def switch(value: SettingValue) -> bool:
    """A setting that turns something on: ``true``, ``1``, ``yes``, ``on`` (any case, or YAML true); else off."""
    return str(value).lower() in ("1", "true", "yes", "on")


def choice(service: str, key: str, settings: Mapping[str, SettingValue], valid: tuple[str, ...]) -> str:
    """``settings[key]`` as text, which must be one of ``valid`` (else a config error naming ``service``)."""
    value = str(settings[key])
    if value not in valid:
        raise ServiceConfigError(f"service {service!r}: settings.{key} is {value!r}; valid: {', '.join(valid)}")
    return value
