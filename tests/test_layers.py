"""The package's layers, read from the source (imports inside functions count; ``if TYPE_CHECKING:`` ones do not):
a module imports only its own layer or lower ones, peers never import each other, ``plots`` never imports
``analysis``, and ``store`` imports neither ``train`` nor, lazily, ``config``. docs/architecture.md draws the same map.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_layering import PACKAGE, MODULES, _runtime_nodes, graph, module_of

# Lowest first. A module's layer is that of the longest prefix listed; peers share a rank but are kept apart.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "faults", "bounded", "tables", "threads"),  # plumbing every layer may use
    ("bank",),  # exemplar banks
    ("task",),  # sequences, evaluators, metrics
    ("model",),  # the network and *where* (sites, hook names); the only TransformerLens importer
    ("interventions",),  # one vocabulary, one engine
    ("config", "train.config", "train.schedule", "presets"),  # what a run is (schedule: its checkpoint/eval specs)
    ("store",),  # a run on disk: the Run handle, its writer and reader, the network a run describes
    ("train",),  # the algorithm
    ("analysis", "plots"),  # peers: compute tables / draw tables
    ("pipeline",),  # compute -> tables -> figures -> index
    ("cli", "__main__", "", "zoom", "sweep", "images", "toy"),  # entry points and apps ("" = the package's API)
)
PEERS_APART = {("analysis", "plots"), ("plots", "analysis")}


def part_of(module: str) -> str:
    """The entry of ``LAYERS`` that owns ``module`` (the longest matching prefix)."""
    name = module.removeprefix("coopetition").removeprefix(".")
    found = [p for layer in LAYERS for p in layer if p and (name == p or name.startswith(p + "."))]
    if not found:
        return "" if name == "" else pytest.fail(f"module {module} is in no layer of LAYERS")
    return max(found, key=len)


def rank(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def violations(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(edges.items()):
        here = part_of(module)
        for target in sorted(targets):
            there = part_of(target)
            if rank(there) > rank(here):
                out.append(f"{module} ({here}, layer {rank(here)}) imports {target} ({there}, layer {rank(there)})")
            elif (here, there) in PEERS_APART:
                out.append(f"{module} ({here}) imports its peer {target} ({there})")
    return out


def test_every_module_imports_only_its_layer_or_lower():
    assert not violations(graph()), "\n".join(violations(graph()))


def test_plots_never_import_analysis():
    offenders = {m: t for m, t in graph().items() if m.startswith("coopetition.plots")
                 and any(x.startswith("coopetition.analysis") for x in t)}
    assert not offenders, offenders


def lazy_imports(path: Path) -> set[str]:
    """Package modules imported inside a function body (runtime code only)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                    found |= {inner.module} | {f"{inner.module}.{a.name}" for a in inner.names}
                elif isinstance(inner, ast.Import):
                    found |= {a.name for a in inner.names}
    return {m for m in found if m in MODULES}


def test_store_imports_neither_train_nor_config_lazily():
    for path in (PACKAGE / "store").rglob("*.py"):
        edges = graph()[module_of(path)]
        assert not {e for e in edges if e.startswith("coopetition.train.") and e != "coopetition.train.config"
                    or e == "coopetition.train"}, path
        lazy = {m for m in lazy_imports(path) if m.startswith(("coopetition.config", "coopetition.train"))}
        assert not lazy, f"{path.name} imports {sorted(lazy)} inside a function"


@pytest.mark.parametrize("edges, expected", [
    ({"coopetition.plots.x": {"coopetition.analysis.base"}}, "peer"),
    ({"coopetition.store.run": {"coopetition.train.loop"}}, "layer"),
    ({"coopetition.bank": {"coopetition.task.sampler"}}, "layer"),
    ({"coopetition.pipeline.run": {"coopetition.analysis.base", "coopetition.plots.common"}}, None),
])
def test_the_rule_itself_on_hand_built_graphs(edges, expected):
    """The checker catches an upward import and a peer import, and allows a downward one."""
    found = violations(edges)
    if expected is None:
        assert not found
    else:
        assert found and expected in found[0]
