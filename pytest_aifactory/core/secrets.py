"""Keep secrets out of reports, metric labels and log lines.

A value is secret when it comes from an environment variable whose name says so (KEY, TOKEN,
SECRET, PASSWORD, PASSWD, CREDENTIAL), from a profile's ``env`` under such a name, or is the
password of a URL. ``Redactor.clean`` replaces every occurrence in any JSON-like structure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Redactor", "redact_url"]

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MASK = "***"


def redact_url(url: str) -> str:
    """``https://user:pw@host/`` -> ``https://user:***@host/``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", f":{MASK}@")))


class Redactor:
    """Masks known secret values wherever they appear."""

    def __init__(self, extra: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        values = {v for k, v in env.items() if SECRET_NAME.search(k)} | set(extra)
        self.secrets = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def add(self, *values: str) -> None:
        """Treat ``values`` as secrets from now on."""
        self.secrets = sorted({*self.secrets, *(v for v in values if len(v) >= 4)}, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with secrets and URL passwords masked."""
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return re.sub(r"(://[^/\s:@]+:)[^@\s/]+@", rf"\1{MASK}@", value)

    def clean(self, data: Any) -> Any:
        """A copy of ``data`` (dicts, lists, strings...) with every secret masked."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, Mapping):
            return {self.text(str(k)): self.clean(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.clean(v) for v in data]
        return data
