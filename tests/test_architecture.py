"""The layers of docs/architecture.md hold: imports point one way, no cycles, no private names
of other modules. The import graph is read from the source with `ast`, so this fails on the
commit that adds a wrong import, not later."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
LAYER = {"classes": 0, "errors": 0, "config": 0, "textfiles": 0, "metrics": 1, "inference": 1, "data": 1, "losses": 1,
         "models": 1, "runtime": 1, "data_manifests": 1, "train": 2, "pseudolabel": 2, "validation": 2,
         "stages": 3, "api": 4}


def modules():
    out = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def layer(mod: str) -> int:
    parts = mod.split(".")
    return 0 if len(parts) < 2 else LAYER[parts[1]]


def graph():
    mods = modules()
    edges, private = {}, []
    for m, p in mods.items():
        aliases = {}
        tree = ast.parse(p.read_text())
        package = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for n in ast.walk(tree):
            targets = []
            module = n.module if isinstance(n, ast.ImportFrom) else None
            if isinstance(n, ast.ImportFrom) and n.level:
                # `from .x import y` / `from .. import x`: resolved against the importing module's package,
                # so relative imports (and imports under `if TYPE_CHECKING`) count like absolute ones
                base = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                module = ".".join(base + ([n.module] if n.module else []))
            if module and module.startswith("pipeline"):
                for a in n.names:
                    full = f"{module}.{a.name}"
                    targets.append(full if full in mods else module)
                    if full in mods:
                        aliases[a.asname or a.name] = full
                    elif a.name.startswith("_") and not a.name.startswith("__"):
                        private.append(f"{m} imports {module}.{a.name}")
            elif isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.startswith("pipeline"):
                        targets.append(a.name)
                        aliases[a.asname or a.name] = a.name
            for t in targets:
                # a package's __init__ re-exporting its own submodules is not a dependency on them
                if t in mods and t != m and not (p.name == "__init__.py" and t.startswith(m + ".")):
                    edges.setdefault(m, set()).add(t)
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases \
                    and n.attr.startswith("_") and not n.attr.startswith("__"):
                private.append(f"{m} uses {aliases[n.value.id]}.{n.attr}")
    return mods, edges, private


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)  # KeyError names a top-level module docs/architecture.md does not place


def test_imports_point_down():
    _, edges, _ = graph()
    bad = [f"{m} -> {t}" for m, ts in edges.items() for t in ts if layer(t) > layer(m)]
    bad += [f"{m} -> {t}" for m, ts in edges.items() for t in ts
            if (m.startswith("pipeline.data") and t.startswith("pipeline.models"))
            or (m.startswith("pipeline.runtime") and t.startswith(("pipeline.models", "pipeline.data")))]
    assert not bad, bad


def test_no_private_names_of_other_modules():
    _, _, private = graph()
    assert not private, private


def cycles() -> list[str]:
    mods, edges, _ = graph()
    state, found = {}, []

    def visit(u, path):
        state[u] = 1
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                found.append(" -> ".join(path[path.index(v):] + [v]))
            elif v not in state:
                visit(v, path + [v])
        state[u] = 2
    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_cycles():
    assert not cycles(), cycles()


def test_the_check_can_fail(tmp_path):
    """A data module importing a model is caught (the test above is not vacuous)."""
    global ROOT
    fake = tmp_path / "pipeline"
    (fake / "data").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "data" / "x.py").write_text("from pipeline.models.y import thing\nfrom pipeline.stages.z import _hidden\n")
    (fake / "models" / "y.py").write_text("thing = 1\n")
    old, ROOT = ROOT, fake
    try:
        _, edges, private = graph()
        assert edges == {"pipeline.data.x": {"pipeline.models.y"}}
        assert private == ["pipeline.data.x imports pipeline.stages.z._hidden"]
        assert not cycles()
        # a circle through relative imports, one side only under TYPE_CHECKING, is still a circle
        (fake / "data" / "a.py").write_text("from .b import f\n")
        (fake / "data" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
        assert cycles() == ["pipeline.data.a -> pipeline.data.b -> pipeline.data.a"]
    finally:
        ROOT = old
