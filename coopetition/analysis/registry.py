"""The analyses: importing this module registers every built-in one (the import order is the default order of
``--analyses``, of the CLI help, of the tables and of the index page); ``names`` and ``get`` read the registry."""

from coopetition.analysis import strategies  # noqa: F401,I001  (defining a class registers it)
from coopetition.analysis import ablation, patching, probes, progress, clamp, circuit, scorecard, llc  # noqa: F401
from coopetition.analysis.base import REGISTRY, Analysis


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> type[Analysis]:
    return REGISTRY[name]
