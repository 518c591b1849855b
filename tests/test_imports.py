"""Every import in metalm_jax runs down the house: config -> data (its shared modules -> corpora ->
pretraining rows and tasks -> the pipelines) -> model -> convert -> train -> eval -> the training
loop -> command-line modules; no module imports itself back through others (no cycle among
modules, within a floor or across floors). Read from the source with ast (nothing is imported),
function-level imports included; a failure names the file, line and both modules. The moved
command-line entry points keep their documented names."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "metalm_jax"

# The floors, lowest first (rank = position). A module may import its own floor and any floor of
# a lower rank; floors of one rank (pretrain and tasks, model and parallel) may import each other
# but not in a cycle.
RANKS = {
    "base": 0,
    "data": 1,
    "corpora": 2,
    "pretrain": 3,
    "tasks": 3,
    "pipeline": 4,
    "model": 5,
    "parallel": 5,
    "convert": 6,
    "train": 7,
    "eval": 8,
    "loop": 9,
    "top": 10,
}
# Module or package -> floor: the longest matching prefix decides. Every module needs an entry
# below its package name (a new top-level module must be placed here on purpose).
FLOORS = {
    # small modules everything may use: the package docstring, the Batch contract, every config
    # key with its default, bundled-resource paths
    "metalm_jax.__init__": "base",
    "metalm_jax.types": "base",
    "metalm_jax.config": "base",
    "metalm_jax.resources": "base",
    # a run's files local or on an object store (gs://, through etils.epath)
    "metalm_jax.paths": "base",
    # run_cli: how every command line ends on a user error (the types are in types.py)
    "metalm_jax.cli": "base",
    # data, numpy only, no model. What its three concerns share: the package docstring, the
    # tokenizer, images, spans and their encodings, the one row builder
    "metalm_jax.data": "data",
    # TFDS builders and file reading (text, image-text)
    "metalm_jax.data.corpora": "corpora",
    # pretraining rows (packing, packed rows, image-text rows) and, beside them, supervised tasks
    # (examples, the task registry, the tasks, mixtures, task rows); neither imports the other
    "metalm_jax.data.pretrain": "pretrain",
    "metalm_jax.data.tasks": "tasks",
    # what a run reads (data/feed/): the grain pipelines, built on all three, and the prepared
    # rows (the prepare job, its manifest check)
    "metalm_jax.data.feed": "pipeline",
    # the Flax model, and beside it the mesh, multi-process helpers and the accelerator table
    # (neither imports the other)
    "metalm_jax.model": "model",
    "metalm_jax.parallel": "parallel",
    # weight importers (Hugging Face / Orbax -> parameter trees); they read data's special ids
    # and pixel statistics; training applies them (init, finetuning)
    "metalm_jax.convert": "convert",
    # optimizer, train step, compiled trainer, checkpoints, finetuning config, metric writers
    "metalm_jax.training": "train",
    # loading a run, decoding, scoring, evaluators: they use the trainer's compiled steps
    "metalm_jax.eval": "eval",
    # the training run itself runs the evaluators and the end-of-run sample, so it sits above eval
    "metalm_jax.loop": "loop",
    # command-line modules and the tests' helpers: nothing in the package imports them
    "metalm_jax.train": "top",  # the command package: `python -m metalm_jax.train`
    "metalm_jax.aot": "top",
    "metalm_jax.caption": "top",
    "metalm_jax.evaluate": "top",
    "metalm_jax.export": "top",
    "metalm_jax.generate": "top",
    "metalm_jax.prepare": "top",
    "metalm_jax.testing": "top",
}


def package_sources(root: str = ROOT) -> dict[str, str]:
    """{module name: source} of every .py file of the package (`pkg.__init__` for packages)."""
    out = {}
    for dirpath, dirnames, files in os.walk(os.path.join(root, PACKAGE)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                with open(path, encoding="utf-8") as fh:
                    out[name] = fh.read()
    return out


def floor_of(module: str) -> str | None:
    """The floor of a module name (`a.b.__init__` or `a.b`), by the longest FLOORS prefix."""
    best = None
    for prefix in FLOORS:
        bare = prefix.removesuffix(".__init__")
        exact = prefix.endswith(".__init__")
        hit = (
            module in (prefix, bare)
            if exact
            else module == prefix or module.startswith(prefix + ".")
        )
        if hit and (best is None or len(prefix) > len(best)):
            best = prefix
    return FLOORS[best] if best is not None else None


def _is_main_block(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` at module level: the module run as a command."""
    t = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def imports_of(module: str, source: str, known: set[str]) -> list[tuple[int, str, bool]]:
    """[(line, imported package module, inside an `if __name__ == "__main__":` block)]: import
    statements anywhere (functions included) and importlib.import_module("literal") calls."""
    tree = ast.parse(source, module)
    main_lines = set()
    for node in tree.body:
        if _is_main_block(node):
            main_lines.update(range(node.lineno, node.end_lineno + 1))
    is_package = module.endswith(".__init__")
    here = module.removesuffix(".__init__").split(".")
    found = []

    def add(line, name):
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            found.append((line, name, line in main_lines))

    def resolve(name):  # a package's name stands for its __init__
        return name + ".__init__" if name + ".__init__" in known else name

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(node.lineno, resolve(a.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package
                pkg = here if is_package else here[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                add(node.lineno, resolve(sub) if resolve(sub) in known else resolve(base))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.lineno, resolve(node.args[0].value))
    return found


def import_edges(sources: dict[str, str]) -> list[tuple]:
    """[(importer, line, imported, importer's floor, imported floor, in a __main__ block)]
    between package modules; an import inside a module's `if __name__ == "__main__":` block is
    the command's, so on the top floor."""
    known = set(sources)
    edges = []
    for module, source in sources.items():
        for line, name, in_main in imports_of(module, source, known):
            mine = "top" if in_main else floor_of(module)
            edges.append((module, line, name, mine, floor_of(name), in_main))
    return edges


def upward_imports(sources: dict[str, str]) -> list[str]:
    """One message per import that reaches a higher floor, or a top-floor module from anywhere
    but a `__main__` block (a command may hand over to another command)."""
    bad = []
    for module, line, name, mine, theirs, in_main in import_edges(sources):
        where = f"{module.replace('.', '/')}.py:{line}: {module} ({mine}) imports {name} ({theirs})"
        if theirs == "top" and name != module and not in_main:
            bad.append(f"{where}: a command-line or test-helper module; nothing imports those")
        elif RANKS[theirs] > RANKS[mine]:
            bad.append(f"{where}: a higher floor")
    return bad


def _find_cycle(graph: dict[str, dict], step) -> list[str] | None:
    """The first cycle of a directed graph ({node: {next node: what makes the edge}}), found
    depth-first in sorted order, as one `step(a, b)` line per edge; None if there is none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                return [step(a, b) for a, b in zip(cycle, cycle[1:] + [nxt], strict=True)]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def floor_cycle(sources: dict[str, str]) -> list[str] | None:
    """A cycle in the graph of floors (each edge with one import that makes it), or None."""
    graph: dict[str, dict[str, str]] = {}
    for module, line, name, mine, theirs, _ in import_edges(sources):
        if mine != theirs:
            graph.setdefault(mine, {}).setdefault(theirs, f"{module}:{line} -> {name}")
    return _find_cycle(graph, lambda a, b: f"{a} -> {b} ({graph[a][b]})")


def module_cycle(sources: dict[str, str]) -> list[str] | None:
    """A cycle among modules, within a floor or across floors (each step: the file and line of an
    import that makes it), or None. An import inside a function counts: deferring it hides the
    cycle from Python at import time, not from the design. One inside a module's `if __name__ ==
    "__main__":` block does not: run as a command the module is `__main__`, another module object
    than the one its imports may load."""
    graph: dict[str, dict[str, int]] = {}
    for module, line, name, _, _, in_main in import_edges(sources):
        if not in_main and name != module:
            graph.setdefault(module, {}).setdefault(name, line)
    return _find_cycle(
        graph, lambda a, b: f"{a.replace('.', '/')}.py:{graph[a][b]}: {a} imports {b}"
    )


def folder_of(module: str) -> str:
    """The folder a module's file lies in, as a dotted name (`metalm_jax.data.tasks` for
    `metalm_jax.data.tasks.kjv` and for `metalm_jax.data.tasks.__init__`); a module directly in
    the package (config, loop, the commands) is a node of its own, as the package's root holds
    both the lowest floor and the highest."""
    parts = module.split(".")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1])
    return module if len(parts) == 2 else ".".join(parts[:-1])


def folder_cycle(sources: dict[str, str]) -> list[str] | None:
    """A cycle among folders (each step: one import that makes it), or None: a folder whose
    modules import a second folder that imports the first back, a parent folder and its
    subfolder included. A `__main__` block counts as in `module_cycle`."""
    graph: dict[str, dict[str, str]] = {}
    for module, line, name, _, _, in_main in import_edges(sources):
        a, b = folder_of(module), folder_of(name)
        if not in_main and a != b:
            graph.setdefault(a, {}).setdefault(b, f"{module}:{line} -> {name}")
    return _find_cycle(graph, lambda a, b: f"{a}/ -> {b}/ ({graph[a][b]})")


@pytest.fixture(scope="module")
def sources():
    return package_sources()


def test_every_module_has_a_floor(sources):
    assert set(FLOORS.values()) <= set(RANKS)
    missing = [m for m in sources if floor_of(m) is None]
    assert not missing, f"give these modules a floor in FLOORS (tests/test_imports.py): {missing}"
    unused = [p for p in FLOORS if not any(_matches(p, m) for m in sources)]
    assert not unused, f"FLOORS names modules that do not exist: {unused}"


def _matches(prefix: str, module: str) -> bool:
    bare = prefix.removesuffix(".__init__")
    return module in (prefix, bare) or module.startswith(bare + ".")


def test_imports_run_down(sources):
    bad = upward_imports(sources)
    assert not bad, "imports that run up the house:\n" + "\n".join(bad)


def test_no_cycles_between_floors(sources):
    cycle = floor_cycle(sources)
    assert cycle is None, "floors import each other in a cycle:\n" + "\n".join(cycle)


def test_no_cycles_between_modules(sources):
    cycle = module_cycle(sources)
    assert cycle is None, "modules import each other in a cycle:\n" + "\n".join(cycle)


def test_no_cycles_between_folders(sources):
    cycle = folder_cycle(sources)
    assert cycle is None, "folders import each other in a cycle:\n" + "\n".join(cycle)


def test_the_check_finds_a_cycle_between_folders():
    # No module cycle, no floor running up, yet the folders go round: a command module in the
    # library's folder reaches the loop, which imports that folder back.
    fake = {
        "metalm_jax.training.__init__": "",
        "metalm_jax.training.trainer": "",
        "metalm_jax.training.__main__": "from metalm_jax import loop\n",
        "metalm_jax.loop": "from metalm_jax.training import trainer\n",
    }
    assert module_cycle(fake) is None
    assert folder_cycle(fake) == [
        "metalm_jax.loop/ -> metalm_jax.training/ "
        "(metalm_jax.loop:1 -> metalm_jax.training.trainer)",
        "metalm_jax.training/ -> metalm_jax.loop/ "
        "(metalm_jax.training.__main__:1 -> metalm_jax.loop)",
    ]
    # A parent folder whose own modules sit above its subfolder's, which import it back.
    fake = {
        "metalm_jax.data.pipeline": "from metalm_jax.data.corpora import text\n",
        "metalm_jax.data.corpora.text": "from metalm_jax.data import images\n",
        "metalm_jax.data.images": "",
    }
    assert module_cycle(fake) is None and folder_cycle(fake) == [
        "metalm_jax.data/ -> metalm_jax.data.corpora/ "
        "(metalm_jax.data.pipeline:1 -> metalm_jax.data.corpora.text)",
        "metalm_jax.data.corpora/ -> metalm_jax.data/ "
        "(metalm_jax.data.corpora.text:1 -> metalm_jax.data.images)",
    ]
    # Moved into a folder of its own (the house's data/feed/), the pipeline makes no cycle.
    fake["metalm_jax.data.feed.pipeline"] = fake.pop("metalm_jax.data.pipeline")
    assert folder_cycle(fake) is None


def test_the_check_names_what_runs_up():
    fake = {
        "metalm_jax.__init__": "",
        "metalm_jax.data.__init__": "",
        "metalm_jax.data.feed.pipeline": (
            "def f():\n    from metalm_jax.convert import resolve_path\n"
        ),
        "metalm_jax.convert.__init__": "from metalm_jax.data.feed import pipeline\n",
        "metalm_jax.eval.evaluators": "from metalm_jax.generate import generate_with\n",
        "metalm_jax.generate": "from metalm_jax.eval import evaluators\n",
        "metalm_jax.convert.gpt2": (
            'if __name__ == "__main__":\n    from metalm_jax import export\n    export.run()\n'
        ),
        "metalm_jax.export": "import importlib\nimportlib.import_module('metalm_jax.eval.load')\n",
        "metalm_jax.eval.load": "from metalm_jax.loop import evaluate\n",
        "metalm_jax.loop": "",
    }
    bad = upward_imports(fake)
    assert len(bad) == 3, bad
    assert bad[0] == (
        "metalm_jax/data/feed/pipeline.py:2: metalm_jax.data.feed.pipeline (pipeline) imports "
        "metalm_jax.convert.__init__ (convert): a higher floor"
    )
    assert "metalm_jax.eval.evaluators (eval) imports metalm_jax.generate (top)" in bad[1]
    assert "metalm_jax.eval.load (eval) imports metalm_jax.loop (loop)" in bad[2]


def test_the_check_finds_a_cycle_between_floors_of_one_rank():
    fake = {
        "metalm_jax.model.__init__": "from . import layers\n",
        "metalm_jax.model.layers": "def f():\n    import metalm_jax.parallel.mesh\n",
        "metalm_jax.parallel.mesh": "from ..model import layers\n",
    }
    assert upward_imports(fake) == []
    assert floor_cycle(fake) == [
        "model -> parallel (metalm_jax.model.layers:2 -> metalm_jax.parallel.mesh)",
        "parallel -> model (metalm_jax.parallel.mesh:1 -> metalm_jax.model.layers)",
    ]
    del fake["metalm_jax.parallel.mesh"]
    assert floor_cycle(fake) is None


def test_the_check_finds_a_cycle_between_modules():
    # One floor: a registry that opens its tasks by a function-level import, and a task module
    # that registers itself in it (the floor checks see nothing wrong).
    fake = {
        "metalm_jax.data.tasks.__init__": "",
        "metalm_jax.data.tasks.registry": (
            "def open_task(name):\n    from metalm_jax.data.tasks import kjv\n    return kjv\n"
        ),
        "metalm_jax.data.tasks.kjv": "from metalm_jax.data.tasks.registry import open_task\n",
        "metalm_jax.data.tasks.mixture": "from . import registry\n",
    }
    assert upward_imports(fake) == [] and floor_cycle(fake) is None
    assert module_cycle(fake) == [
        "metalm_jax/data/tasks/kjv.py:1: metalm_jax.data.tasks.kjv imports "
        "metalm_jax.data.tasks.registry",
        "metalm_jax/data/tasks/registry.py:2: metalm_jax.data.tasks.registry imports "
        "metalm_jax.data.tasks.kjv",
    ]
    fake["metalm_jax.data.tasks.registry"] = "def open_task(name):\n    return name\n"
    assert module_cycle(fake) is None
    # Across floors, three modules round; a command's own `__main__` block makes no cycle.
    fake = {
        "metalm_jax.eval.evaluators": "def task():\n    from metalm_jax.eval import task_eval\n",
        "metalm_jax.eval.task_eval": "from metalm_jax.training.trainer import Trainer\n",
        "metalm_jax.training.trainer": "import metalm_jax.eval.evaluators\n",
        "metalm_jax.export": "import metalm_jax.training.checkpoint\n",
        "metalm_jax.training.checkpoint": (
            'if __name__ == "__main__":\n    from metalm_jax import export\n'
        ),
    }
    assert module_cycle(fake) == [
        "metalm_jax/eval/evaluators.py:2: metalm_jax.eval.evaluators imports "
        "metalm_jax.eval.task_eval",
        "metalm_jax/eval/task_eval.py:1: metalm_jax.eval.task_eval imports "
        "metalm_jax.training.trainer",
        "metalm_jax/training/trainer.py:1: metalm_jax.training.trainer imports "
        "metalm_jax.eval.evaluators",
    ]
    del fake["metalm_jax.training.trainer"]
    assert module_cycle(fake) is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-m", "metalm_jax.export", "--workdir={tmp}/nope", "--out={tmp}/out"], "no such run"),
        (
            ["-m", "metalm_jax.convert.gpt2", "--workdir={tmp}/nope", "--out={tmp}/o"],
            "now `python -m metalm_jax.export",
        ),
        (["-m", "metalm_jax.caption", "--workdir={tmp}", "--image={tmp}/x.png"], "does not exist"),
        (["-m", "metalm_jax.generate", "--workdir={tmp}/run"], "no such run directory"),
    ],
)
def test_moved_commands_keep_their_names(argv, message, tmp_path):
    """The commands whose code moved (export out of convert/gpt2.py, generation into
    eval/generation.py) still start under their documented names and reach that code."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode != 0 and message in out.stdout + out.stderr, out.stderr[-2000:]
