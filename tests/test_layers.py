"""The package imports one way (imports inside functions count): no circle of files, each
layer only from those below it, `config` (the schema) from `utils` only, and the model classes
from neither configs nor checkpoints."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "revvideo"
# Bottom first: a module imports only from its own layer or those below it.
LAYERS = [
    {"__init__"},  # revvideo/__init__.py: the version, importing nothing
    {"utils"},
    {"config"},
    {"classes"},
    {"checkpoint"},
    {"models"},
    {"deploy"},
    {"data"},
    {"engine"},
    {"demo", "benchmark", "serve"},
    {"cli"},
]
CONFIG_KEY = re.compile(r"\b(?:MODEL|DATA|MVIT|AUG|MIXUP|DATA_LOADER|TRAIN|TEST|SOLVER)\.[A-Z]")
MODULES = {
    ".".join(("revvideo", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
        ".__init__"
    ): path
    for path in PACKAGE.rglob("*.py")
}


def _file(name: str) -> Path | None:
    """The file of the longest known module that `name` starts with."""
    pieces = name.split(".")
    while pieces and ".".join(pieces) not in MODULES:
        pieces.pop()
    return MODULES[".".join(pieces)] if pieces else None


def _imports(path: Path) -> set[Path]:
    """The package's files that `path` imports, anywhere in it."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return {file for file in map(_file, names) if file is not None and file != path}


GRAPH = {path: _imports(path) for path in MODULES.values()}


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _layer(path: Path) -> int:
    return next(index for index, layer in enumerate(LAYERS) if _part(path) in layer)


def test_no_circle_of_imports():
    done: set[Path] = set()

    def visit(path: Path, trail: list[Path]) -> None:
        if path in trail:
            circle = [*trail[trail.index(path) :], path]
            raise AssertionError(" -> ".join(str(p.relative_to(PACKAGE)) for p in circle))
        if path not in done:
            for imported in GRAPH[path]:
                visit(imported, [*trail, path])
            done.add(path)

    for path in GRAPH:
        visit(path, [])


def test_every_import_runs_down_the_layers():
    upward = [
        f"{path.relative_to(PACKAGE)} imports {imported.relative_to(PACKAGE)}"
        for path, imports in GRAPH.items()
        if path != PACKAGE / "__init__.py"
        for imported in imports
        if _layer(imported) > _layer(path)
    ]
    assert upward == []


def test_config_is_the_schema_and_imports_only_utils():
    for path in (PACKAGE / "config").glob("*.py"):
        assert {_part(imported) for imported in GRAPH[path]} <= {"config", "utils"}, path


def test_the_model_classes_know_no_config_key_and_no_checkpoint():
    for path in (PACKAGE / "models").glob("*.py"):
        if path.name == "build.py":  # the one place that maps config keys to arguments
            continue
        assert CONFIG_KEY.search(path.read_text()) is None, path
        if path.name not in ("zoo.py", "__init__.py"):  # the builders load weights=
            parts = {_part(imported) for imported in GRAPH[path]}
            assert not parts & {"config", "checkpoint"}, path
