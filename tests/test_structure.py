"""The code's structure: the package's import graph (deferred imports inside functions included) has no cycles and
only goes down the layers (ops below the kernel choice, below the models, below retrieval and training, below the
pipelines, below the CLIs); and ruff, configured in pyproject.toml, finds nothing."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "mamba_pyserini"
LAYERS = [  # lowest first; a module belongs to the first layer naming it or a package above it
    {"_io", "_java", "pyserini_compat", "_paths", "_cli", "templates", "pooling", "ops"},
    {"_kernels"},
    {"modeling"},
    {"runs", "topics", "corpus", "candidates", "evaluation", "first_stage", "sparse", "dense", "texts", "reranker",
     "training"},
    {"pipeline", "bench", "cpu_bench", "regression", "_search_cli"},
    {"search", "rerank", "encode", "index", "train", "distill", "prepare", "with_jvm"},
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("mamba_pyserini"):
                target = node.module.removeprefix("mamba_pyserini").lstrip(".")
            else:
                continue
            out |= {f"{target}.{a.name}".lstrip(".") if f"{target}.{a.name}".lstrip(".") in known else target
                    for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("mamba_pyserini").lstrip(".") for a in node.names
                    if a.name.startswith("mamba_pyserini.")}
    return {m for m in out if m in known and m != name}


def layer(name: str) -> int:
    for rank, members in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members):
            return rank
    raise AssertionError(f"mamba_pyserini.{name} is in no layer: add it to LAYERS")


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items() if name}


def test_every_import_goes_down_or_sideways():
    upward = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
              for src, targets in graph().items() for dst in targets if layer(dst) > layer(src)]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checks_see_deferred_imports():
    """The graph holds imports made inside functions (the package defers heavy ones), so a cycle cannot hide there."""
    edges = graph()
    assert "modeling.auto" in edges["reranker"]  # imported inside MambaReranker.from_pretrained
    assert "ops.ssd" in edges["_kernels"]


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(PACKAGE.parent)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_saved_configs_carry_no_machine_paths(tiny_checkpoints):
    """Neither the bundled models nor a freshly saved one record where they were loaded from."""
    import json

    bundled = sorted((PACKAGE.parent / "collections" / "models").glob("*/config.json"))
    assert bundled
    for config in [*bundled, tiny_checkpoints["mamba"] / "config.json"]:
        assert "_name_or_path" not in json.loads(config.read_text()), config
