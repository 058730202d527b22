"""The optional packages of ``coopetition[images]``: a missing one is a one-line error naming the extra."""

from __future__ import annotations

import importlib

from coopetition.errors import ConfigError

EXTRA = "pip install 'coopetition[images]'"


def require(*modules: str) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"this command needs {module}: {EXTRA}") from None
