"""Keep secrets out of reports, metric labels and log lines.

A value is secret when it comes from a variable whose name says so in the environment or in
a profile's ``env`` (``is_secret_name``: by whole parts of the name, so ``HF_TOKEN`` is and
``MAX_TOKENS`` is not), when it is one of the run's generated S3 keys, when it is given
explicitly, or when it is the password of a URL. A secret-named value is a secret whatever it
looks like, digits included (``DB_PASSWORD=12345678``), but all-digit secrets only as a whole
number (not inside ``1234567890`` or ``0.12345678``: a job id or a duration stays intact); only
values under 6 characters are not masked (they would mask every short word and number of every line).

Masking is done field by field, on values, before anything is serialized: a label value, a
log line, a string of a report. Numbers are never touched, so a serialized body stays valid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["RUN_SECRET_VARIABLES", "Redactor", "is_secret_name", "redact_url"]

# A name's parts: split at "_", "-", "." and case changes (``x-api-key``, ``apiKey``, ``HFToken``).
_NAME_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A part that is one of these words makes the name secret (``AWS_SECRET_ACCESS_KEY``, ``DB_PASS``).
SECRET_WORDS = frozenset(
    {"KEY", "TOKEN", "SECRET", "PASS", "PASSWORD", "PASSWD", "PASSPHRASE", "PWD", "CREDENTIAL", "CREDENTIALS"}
)
# A part ending in one of these is a glued name (``PGPASSWORD``, ``HFTOKEN``, ``DBPASS``, ``SSHKEY``),
# unless it is an ordinary word that happens to end so (``BYPASS``, ``HOTKEY``, ``MONKEY``).
GLUED_ENDINGS = ("PASS", "PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "KEY")
NOT_GLUED = frozenset(
    {"BYPASS", "COMPASS", "ENCOMPASS", "SURPASS", "TRESPASS", "OVERPASS", "UNDERPASS"}
    | {"HOTKEY", "MONKEY", "TURNKEY", "DONKEY", "HOCKEY", "JOCKEY", "TURKEY", "WHISKEY"}
)
SHELL_DIRECTORIES = frozenset({"PWD", "OLDPWD"})  # the shell's working directories, not passwords
RUN_SECRET_VARIABLES = ("AIF_S3_ACCESS_KEY", "AIF_S3_SECRET_KEY", "AIF_VLLM_API_KEY")  # generated for each run
MIN_SECRET_LENGTH = 6
MASK = "***"
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+@")


def redact_url(url: str) -> str:
    """``https://user:pw@host/`` -> ``https://user:***@host/``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", f":{MASK}@")))


def is_secret_name(name: str) -> bool:
    """True for a variable that holds a secret by its name (``HF_TOKEN``, ``PGPASSWORD``, ``x-api-key``...).

    Whole parts of the name count, never a substring: ``MAX_TOKENS`` and ``KEYCLOAK_URL`` are not secret.
    """
    if name in RUN_SECRET_VARIABLES:
        return True
    if name.upper() in SHELL_DIRECTORIES:
        return False
    parts = [part.upper() for part in _NAME_PART.findall(name)]
    return any(part in SECRET_WORDS or (part.endswith(GLUED_ENDINGS) and part not in NOT_GLUED) for part in parts)


def _maskable(value: str) -> bool:
    """Long enough to be masked without masking every short word and number (digits count: a PIN is a secret)."""
    return len(value.strip()) >= MIN_SECRET_LENGTH


def _whole_number(digits: str) -> re.Pattern[str]:
    """An all-digit secret as a whole token: not part of a longer number (``1234567``, ``0.123456``)."""
    return re.compile(rf"(?<!\d)(?<!\d\.){digits}(?!\d)(?!\.\d)")


class Redactor:
    """Masks known secret values in the string fields it is given."""

    def __init__(
        self,
        extra: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
        named: Mapping[str, str] | None = None,
    ) -> None:
        """Secrets: ``environ``'s (default ``os.environ``) and ``named``'s values under a secret name, and ``extra``."""
        env = os.environ if environ is None else environ
        self.secrets: list[str] = []
        self.add(*(v for k, v in {**env, **(named or {})}.items() if is_secret_name(k)), *extra)

    def add(self, *values: str) -> None:
        """Treat ``values`` as secrets from now on (those under 6 characters are ignored)."""
        self.secrets = sorted({*self.secrets, *(v for v in values if _maskable(v))}, key=len, reverse=True)

    def text(self, value: str) -> str:
        """One string field with secrets and URL passwords masked."""
        for secret in self.secrets:
            if secret in value:
                value = _whole_number(secret).sub(MASK, value) if secret.isdecimal() else value.replace(secret, MASK)
        return _URL_PASSWORD.sub(rf"\1{MASK}@", value)

    def clean(self, data: Any) -> Any:
        """A copy of JSON-like ``data`` with every string masked; numbers, booleans and None as they are.

        Anything else (a ``Path``...) becomes its masked ``str``, as JSON would show it.
        """
        if data is None or isinstance(data, bool | int | float):
            return data
        if isinstance(data, Mapping):
            return {self.text(str(k)): self.clean(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.clean(v) for v in data]
        return self.text(str(data))
