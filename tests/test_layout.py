"""Repository layout: scripts at the root over one library package, no import circle, no arrow from the
library up to a root script, and no module over 900 lines."""
import ast

from tests.conftest import ROOT

MAX_LINES = 900
ROOT_SCRIPTS = {"Vesicle_generator", "Cytoskeleton_generator", "train_vesicle_seg", "train_cytoskeleton_seg",
                "SynSeg_Vesicle", "SynSeg_Cytoskeleton", "demo", "evaluate", "export_model"}


def project_modules() -> dict[str, object]:
    """{dotted module name: path} for the root's .py files and every module of the synseg package."""
    modules = {p.stem: p for p in ROOT.glob("*.py")}
    for p in (ROOT / "synseg").rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return modules


def module_imports() -> dict[str, set[str]]:
    """{module: the project's modules it imports anywhere (also inside functions)}."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = (found & set(modules)) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of module names (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle():
    cycle = find_cycle(module_imports())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_never_imports_a_root_script():
    graph = module_imports()
    up = {name: sorted(graph[name] & ROOT_SCRIPTS) for name in graph if name.startswith("synseg")}
    assert not any(up.values()), {k: v for k, v in up.items() if v}


def test_the_root_holds_scripts_and_unet_only():
    assert {p.stem for p in ROOT.glob("*.py")} == ROOT_SCRIPTS | {"unet"}
    assert {p.name for p in (ROOT / "synseg").iterdir() if p.is_dir() and p.name != "__pycache__"} >= {
        "generate", "train", "segment"}


def test_no_module_over_900_lines():
    long = {str(p.relative_to(ROOT)): n for p in project_modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
