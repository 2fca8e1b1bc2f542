"""The package's shape, read from its source with ``ast``: imports flow one way (no cycle,
module-level or function-level), no private name crosses a module boundary, the CLI never
imports numpy or torch, and no module outgrows one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "densecls"
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """Every import in a file, at any depth: (module, names taken from it, line)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, tuple(a.name for a in node.names), node.lineno))
    return found


def _edges(module: str) -> set[str]:
    """The densecls modules one module imports (a name that is a submodule counts as it)."""
    out = set()
    for target, names, _ in _imports(MODULES[module]):
        if target not in MODULES:
            continue
        subs = {f"{target}.{n}" for n in names} & MODULES.keys()
        out |= subs or {target}
        if names and len(subs) < len(names):
            out.add(target)
    out.discard(module)
    return out


def test_the_walk_sees_the_package() -> None:
    assert {"densecls.cli.app", "densecls.infer", "densecls.io.readers"} <= MODULES.keys()
    assert "densecls.formats" in _edges("densecls.commands") or any(
        t.startswith("densecls.formats") for t in _edges("densecls.commands")
    )


def test_no_import_cycles() -> None:
    graph = {m: _edges(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_no_private_name_crosses_a_module() -> None:
    crossing = [
        f"{module}:{line} imports {name} from {target}"
        for module, path in MODULES.items()
        for target, names, line in _imports(path)
        if target.startswith("densecls")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not crossing, "\n".join(crossing)


def test_the_cli_imports_no_numpy_or_torch() -> None:
    heavy = [
        f"{module}:{line} imports {target}"
        for module, path in MODULES.items()
        if module == "densecls.cli" or module.startswith("densecls.cli.")
        for target, _, line in _imports(path)
        if target.split(".")[0] in ("numpy", "torch", "torchvision", "PIL")
    ]
    assert not heavy, "\n".join(heavy)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_keep_to_one_job(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by job"


def test_every_module_declares_its_public_names() -> None:
    missing = [
        m for m, p in MODULES.items()
        if m != "densecls.__main__" and "__all__" not in p.read_text()
    ]  # fmt: skip
    assert not missing, missing


def test_the_checker_finds_a_cycle_and_a_private_import(tmp_path: Path) -> None:
    # The checks above must be able to fail: a fake pair of modules shows they do.
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from densecls.infer import _Prepared\n")
    assert _imports(a) == [("densecls.infer", ("_Prepared",), 2)]
    MODULES["densecls._fake_a"] = a
    b = tmp_path / "b.py"
    b.write_text("import densecls._fake_a\n")
    a.write_text("def f():\n    import densecls._fake_b\n")
    MODULES["densecls._fake_b"] = b
    try:
        assert _edges("densecls._fake_a") == {"densecls._fake_b"}
        assert _edges("densecls._fake_b") == {"densecls._fake_a"}
        with pytest.raises(AssertionError, match="import cycles"):
            test_no_import_cycles()
    finally:
        del MODULES["densecls._fake_a"], MODULES["densecls._fake_b"]
