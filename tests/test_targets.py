"""The layering of the kernels, fixq.targets and fixq.ops: import arrows point one way."""
import ast
from pathlib import Path

import fixq

SRC = Path(fixq.__file__).parent
LAYERS = [  # each may import only from its own layer (without a cycle) and those before it
    {"_core", "_validate", "layout"},
    {"arith", "gemm", "conv", "eltwise"},
    {"targets", "targets._common", "targets._dispatch", "targets.tflite", "targets.xnnpack", "targets.onnxruntime",
     "targets.gemmlowp"},
    {"ops"},
]


def _module_file(name):
    path = SRC.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _is_module(name):
    return _module_file(name).exists() or any(SRC.glob(name.replace(".", "/") + ".*.so"))


def _fixq_imports(name):
    """The fixq modules `name` imports, at module level or inside functions."""
    path = _module_file(name)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module.split(".")[0] == "fixq":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = ".".join(base + [alias.name])
                found.add(sub if _is_module(sub) else ".".join(base))
        elif isinstance(node, ast.Import):
            found |= {a.name[len("fixq."):] for a in node.names if a.name.startswith("fixq.")}
            if any(a.name == "fixq" for a in node.names):
                found.add("")  # the whole package, every layer
    return found


def test_import_arrows_point_one_way():
    layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    graph = {m: _fixq_imports(m) for m in layer_of if _module_file(m).exists()}
    assert "_core" not in graph   # compiled
    for m, deps in graph.items():
        for d in deps:
            assert d in layer_of and layer_of[d] <= layer_of[m], f"fixq.{m} imports fixq.{d or '(package)'}"
    state = {}

    def visit(m, path):
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        if state.get(m) is None:
            state[m] = "open"
            for d in graph.get(m, ()):
                visit(d, path + [m])
            state[m] = "done"
    for m in graph:
        visit(m, [])
