"""The Python of a server that runs from its own virtualenv (its pins clash with the plugin's).

vLLM and the embedding server run locally from their own environments, as they run from their
own images on a cluster. Which interpreter: the service's ``settings.python`` (a path, or a
command such as an image's ``python3``), else an environment variable, else the virtualenv
``.ci/install.sh`` makes, looked for in the current folder and beside the package's source tree
(a checkout). An installed plugin without a checkout names it in the setting or the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["own_python"]

_CHECKOUT = Path(__file__).resolve().parents[2]


def own_python(setting: str, variable: str, venv: str) -> str | None:
    """The interpreter the setting or ``variable`` names, else ``venv``'s if found, else None."""
    chosen = setting or os.environ.get(variable, "")
    if chosen:
        return str(Path(chosen).expanduser().absolute()) if os.sep in chosen else chosen
    for root in (Path.cwd(), _CHECKOUT):
        candidate = root / venv / "bin" / "python"
        if candidate.exists():
            return str(candidate.absolute())
    return None
