"""Importing this module registers every built-in analysis; the import order is the default order of
``--analyses`` (and of the CLI help, the tables and the index page)."""

from coopetition.analysis import strategies  # noqa: F401,I001  (defining a class registers it)
from coopetition.analysis import ablation, patching, probes, progress, clamp  # noqa: F401
