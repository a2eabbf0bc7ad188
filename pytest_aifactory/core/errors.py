"""The small error hierarchy of pytest-aifactory."""

from __future__ import annotations


class AifError(Exception):
    """Base class of every error this package raises on purpose."""


class ProfileError(AifError):
    """A Slurm profile is missing, malformed, or names unknown keys."""


class ServiceConfigError(AifError):
    """A service was asked for with an unknown name or setting."""


class JobError(AifError):
    """Submitting, querying or cancelling a job failed."""


class ServiceStartupError(AifError):
    """A service failed, or timed out, while starting."""


class ServiceDiedError(AifError):
    """A service that was ready is no longer running."""


class LoadStoppedError(AifError):
    """A load was stopped early (a service it used is known dead); what it measured is kept."""


class LoadConfigError(AifError, ValueError):
    """A load was asked for with parameters out of range (named, with what is accepted): a bad value."""
