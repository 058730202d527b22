"""The package's import graph, read from the source (function-level imports included): no cycle between its parts,
and TransformerLens is called from the model adapter only."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coopetition"


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p) for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every ``coopetition`` module the file imports, at any depth (deferred imports count): ``from a.b import c``
    is module ``a.b.c`` if that is a module, else ``a.b``."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES}


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def graph() -> dict[str, set[str]]:
    return {module_of(p): imports(p) - {module_of(p)} for p in PACKAGE.rglob("*.py")}


def test_no_import_cycle_in_the_package():
    """Package ``__init__`` files that import their own submodules (a registry, re-exports) are the one allowed
    loop: ``a`` -> ``a.b`` -> ``a``. Any other cycle fails."""
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        if state.get(node) == 1:
            loop = stack[stack.index(node):] + [node]
            if not all(x.startswith(loop[0]) or loop[0].startswith(x) for x in loop):
                pytest.fail("import cycle: " + " -> ".join(loop))
            return
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(edges):
        visit(node, [])


def test_config_interventions_and_train_do_not_import_each_other_back():
    edges = graph()
    interventions = [m for m in edges if m.startswith("coopetition.interventions")]
    for module in interventions:
        assert not {e for e in edges[module] if e.startswith(("coopetition.config", "coopetition.train"))}, module
    assert not {e for e in edges["coopetition.train.config"] if e == "coopetition.config"}
    assert "coopetition.interventions" in edges["coopetition.config"]


@pytest.mark.parametrize("needle", ["transformer_lens", ".hooks(fwd_hooks", "run_with_cache", "start_at_layer",
                                    ".setup()", "set_use_", "apply_slice_to_batch_dim", "hook_dict"])
def test_transformer_lens_is_called_from_the_model_adapter_only(needle):
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.parent.name != "model" and needle in p.read_text()]
    assert not offenders, offenders
