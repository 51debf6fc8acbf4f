"""The layers import downwards only: videorft (the command) over flows over stages; recipes use stages. Read from the
source with ast (nothing imported): no module-level import cycle among the project's modules, and nothing under
stages/ imports flows or videorft, at module level or inside a function."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stages", "flows", "videorft", "recipes")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(node: ast.AST, here: str, is_package: bool, known) -> list[str]:
    """Absolute names an Import/ImportFrom node brings in: `from x import y` is x.y when that is a module, else x."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parent = here.split(".")[: len(here.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(parent + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports(path: Path, name: str, module_level: bool) -> set[str]:
    """The project modules `path` imports: at module level only (what runs on import), or anywhere."""
    tree = ast.parse(path.read_text())
    if module_level:  # statements run on import: the body, and the bodies of its if/try blocks
        nodes, todo = [], list(tree.body)
        while todo:
            n = todo.pop()
            if isinstance(n, (ast.If, ast.Try)):
                todo += n.body + n.orelse + getattr(n, "finalbody", []) + [
                    s for h in getattr(n, "handlers", []) for s in h.body]
            else:
                nodes.append(n)
    else:
        nodes = list(ast.walk(tree))
    known = modules()
    out = set()
    for n in nodes:
        for target in imported(n, name, path.name == "__init__.py", known):
            while target and target not in known:  # `from stages.x import f`: the module is stages.x
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def test_no_module_level_import_cycle():
    graph = {name: imports(path, name, module_level=True) for name, path in modules().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt])
                                     if nxt in path else f"import cycle: {node} -> {nxt}")
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_stages_never_import_flows_or_the_command():
    bad = {name: sorted(i for i in imports(path, name, module_level=False)
                        if i.split(".")[0] in ("flows", "videorft"))
           for name, path in modules().items() if name.split(".")[0] == "stages"}
    assert not {k: v for k, v in bad.items() if v}


def test_the_scan_sees_the_project():
    found = modules()
    assert {"stages.promote", "flows.retrain", "videorft.cli", "recipes.micro_repro"} <= set(found)
    assert "stages.promote" in imports(found["flows.retrain"], "flows.retrain", module_level=False)
    assert "flows.pipeline" in imports(found["videorft.cli"], "videorft.cli", module_level=False)
