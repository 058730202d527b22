"""The analyses: importing this module registers every built-in one (the import order is the default order of
``--analyses``, of the CLI help, of the tables and of the index page), then every plug-in; ``names`` and ``get``
read the registry.

A plug-in is a module that defines an ``Analysis`` subclass (one file; see ``analysis/base.py`` for what it
declares). It is loaded from

- ``COOPETITION_PLUGINS``: a comma list of importable module names (e.g. ``my_analysis`` with its folder on
  ``PYTHONPATH``), or
- the ``coopetition.analyses`` entry-point group of an installed package
  (``[project.entry-points."coopetition.analyses"]`` ``mine = "my_package.my_analysis"``).

A plug-in that cannot be imported is a one-line ``ConfigError`` naming it.
"""

import importlib
import os
from importlib.metadata import entry_points

from coopetition.analysis import strategies  # noqa: F401,I001  (defining a class registers it)
from coopetition.analysis import ablation, patching, probes, progress, clamp, circuit, scorecard, llc  # noqa: F401
from coopetition.analysis.base import REGISTRY, Analysis
from coopetition.errors import ConfigError

PLUGINS_ENV = "COOPETITION_PLUGINS"
ENTRY_POINTS = "coopetition.analyses"


def _load_plugins() -> None:
    found = [(m.strip(), None) for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    found += [(e.value, e) for e in entry_points(group=ENTRY_POINTS)]
    for module, entry in found:
        try:
            entry.load() if entry is not None else importlib.import_module(module)
        except Exception as err:  # noqa: BLE001  (a broken plug-in is the user's to fix: say which, in one line)
            where = (f"entry point {entry.name!r} ({module})" if entry is not None
                     else f"{PLUGINS_ENV} module {module!r}")
            raise ConfigError(f"cannot load analysis plug-in {where}: {type(err).__name__}: {err}") from None


_load_plugins()


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> type[Analysis]:
    return REGISTRY[name]
