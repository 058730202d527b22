"""Hook names are made from typed sites inside ``coopetition/model/`` only (``coopetition.model.sites``): a test that
parses every module of the package and fails on string formatting that builds a hook name anywhere else. A hook name
is recognised by its literal parts (``blocks.``, ``hook_``, ``.attn.``, ``.ln1.`` ...); f-strings, ``%``-formatting,
``.format()``, ``+`` concatenation and ``str.join`` are all caught, whatever the variable names."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coopetition"
HOOKISH = ("blocks.", "hook_", ".attn.", ".mlp.", ".ln1.", ".ln2.", "ln_final.")


def _literal_parts(node: ast.AST) -> list[str]:
    """The constant strings a formatting expression glues together."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _literal_parts(node.left) + _literal_parts(node.right)
    return []


def formatted_hook_names(source: str) -> list[tuple[int, str]]:
    """``(line, snippet)`` of every expression in ``source`` that formats a string containing a hook-name part."""
    found = []
    for node in ast.walk(ast.parse(source)):
        parts: list[str] = []
        if isinstance(node, ast.JoinedStr) and any(not isinstance(v, ast.Constant) for v in node.values):
            parts = _literal_parts(node)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
            parts = _literal_parts(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format",
              "join") and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str)):
            parts = [node.func.value.value] + [s for a in node.args for s in _literal_parts(a)]
        if any(marker in part for part in parts for marker in HOOKISH) and node.lineno not in {l for l, _ in found}:
            found.append((node.lineno, ast.unparse(node)[:80]))  # outermost first (ast.walk is breadth-first)
    return found


@pytest.mark.parametrize("source, n", [
    ('name = f"blocks.{layer}.attn.hook_z"', 1),
    ('name = "blocks.%d.hook_resid_pre" % layer', 1),
    ('name = "blocks.{}.attn.hook_{}".format(layer, part)', 1),
    ('name = "blocks." + str(layer) + ".hook_resid_post"', 1),
    ('name = ".".join(["blocks", str(l), "hook_resid_pre"])', 0),  # no literal hook part glued: not a name
    ('name = "hook_embed"', 0),  # a fixed literal is not formatting
    ('msg = f"layer {layer} must be in [0, {top}]"', 0),
    ('name = hook_name("z", layer)', 0),
])
def test_the_detector_on_known_cases(source, n):
    assert len(formatted_hook_names(source)) == n, formatted_hook_names(source)


def test_no_hook_name_is_formatted_outside_the_model_adapter():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "model":
            continue
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{line}: {snippet}"
                      for line, snippet in formatted_hook_names(path.read_text())]
    assert not offenders, "hook names built outside coopetition/model/ (use coopetition.model.sites):\n" + "\n".join(
        offenders)


def test_the_adapter_does_build_them():
    """The detector is not blind: the sites module itself formats hook names."""
    assert formatted_hook_names((PACKAGE / "model" / "sites.py").read_text())
