"""The folders are the architecture: no lower layer imports a higher one.

Ground floor first: ``observability`` (logs, traces, metrics, search attributes: usable from
anywhere), ``core`` (models, settings, the Temporal connection), then the media core and the
storage beside it, Stratum's functions and pools, Plato's workflows and rules, and at the top
the API (Optimus) and the CLI. Every import in ``app/`` is read, those inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
LAYERS = {
    "observability": 0,
    "core": 1,
    "media": 2,
    "storage": 2,
    "stratum": 3,
    "plato": 4,
    "api": 5,
    "cli": 5,
}
PEERS_APART = {("api", "cli"), ("cli", "api"), ("media", "storage"), ("storage", "media")}
"""Same floor, but neither needs the other: keep it that way."""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "app" or name.startswith("app.")]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_lives_in_a_layer() -> None:
    loose = [p.name for p in APP.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], "modules beside the layers: put them in one"
    assert {p.name for p in APP.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_layer_imports_a_higher_one(layer: str) -> None:
    wrong = []
    for path in sorted((APP / layer).rglob("*.py")):
        for line, module in _imports(path):
            other = _layer(module)
            if other not in LAYERS:
                wrong.append(f"{path.relative_to(APP)}:{line} imports {module} (no layer)")
            elif LAYERS[other] > LAYERS[layer] or (layer, other) in PEERS_APART:
                wrong.append(f"{path.relative_to(APP)}:{line} imports {module} ({other})")
    assert wrong == []
