"""Layering (DESIGN.md): the layers contract of pyproject.toml, and no private names across modules.

The layers contract is checked on the real import graph of the package (what `lint-imports` builds),
then an upward import is injected into that graph and the same contract must break, so it is not a
contract that cannot fail; function-level imports count, because grimp records every import
statement of a module. No module imports another module's private name (``from x import _name``):
shared helpers are public names of a named module; import-linter checks modules, not names, so
that is checked here too.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastfp"
PYPROJECT = PACKAGE.parent / "pyproject.toml"


def source_dir(path: Path, node: ast.ImportFrom) -> Path:
    """The folder of the module an import statement names (relative or absolute)."""
    if node.level:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
    else:
        base = PACKAGE.parent
    return base.joinpath(*(node.module or "").split(".")) if node.module else base


def private_imports(path: Path, text: str):
    """``from x import _name`` where ``_name`` is a private *name* of module x (a private module,
    such as ``from . import _validate``, is a named internal module: allowed)."""
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        where = source_dir(path, node)
        for alias in node.names:
            name = alias.name
            if not name.startswith("_") or name.startswith("__"):
                continue
            if (where / f"{name}.py").exists() or (where / name).is_dir():
                continue  # a private module of a package
            yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno} from " \
                  f"{'.' * node.level}{node.module or ''} import {name}"


def test_no_module_imports_another_modules_private_name():
    found = [hit for path in sorted(PACKAGE.rglob("*.py"))
             for hit in private_imports(path, path.read_text())]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_check_tells_names_from_modules():
    here = PACKAGE / "cexamples" / "api.py"
    assert list(private_imports(here, "from ..noise import _secret\n"))
    assert not list(private_imports(here, "from .. import _validate\n"))


UPWARD = [
    ("fastfp.io", "fastfp.cli.main"),                  # files import the command line
    ("fastfp.noise", "fastfp.cexamples.gradmean"),     # the stream pulls in the method layer
    ("fastfp.distributed", "fastfp.fbi.sharded"),      # infrastructure pulls in FBI code
    ("fastfp.fbi.protocol", "fastfp.metrics"),         # a method imports the eval layer
    ("fastfp.suspects", "fastfp.zoo"),                 # what suspects supply imports the zoo
]
CHAINS = [  # (importer, imported): the three former cycles, one way only
    ("fastfp.cexamples.api", "fastfp.cexamples.verdict"),
    ("fastfp.cexamples.verdict", "fastfp.cexamples.api"),
    ("fastfp.noise", "fastfp.cexamples"),
    ("fastfp.distributed", "fastfp.fbi"),
]
# Run in a fresh interpreter: grimp locates the package through the import system, and a test
# process that already imported fastfp has a different view of it than `lint-imports` has.
SCRIPT = """
import copy, json, sys
import grimp
from importlinter import api
from importlinter.contracts.layers import LayersContract

config = api.read_configuration(sys.argv[1])
options = [c for c in config["contracts_options"] if c["type"] == "layers"]
contract = lambda: LayersContract(name=options[0]["name"],
                                  session_options=config["session_options"],
                                  contract_options=options[0])
graph = grimp.build_graph("fastfp")
kept = contract().check(copy.deepcopy(graph), verbose=False)
out = {"layers": len(options), "kept": kept.kept, "why": repr(kept.metadata), "upward": [],
       "chains": []}
for importer, imported in json.loads(sys.argv[2]):
    g = copy.deepcopy(graph)
    g.add_import(importer=importer, imported=imported, line_number=1,
                 line_contents="import " + imported)
    out["upward"].append(contract().check(g, verbose=False).kept)
for importer, imported in json.loads(sys.argv[3]):
    out["chains"].append(graph.chain_exists(importer=importer, imported=imported))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def checked():
    pytest.importorskip("grimp")
    pytest.importorskip("importlinter")
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(PYPROJECT), json.dumps(UPWARD),
                          json.dumps(CHAINS)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_package_keeps_its_layers(checked):
    assert checked["layers"] == 1, "pyproject.toml should hold exactly one layers contract"
    assert checked["kept"], checked["why"]


@pytest.mark.parametrize("i", range(len(UPWARD)), ids=[f"{a}->{b}" for a, b in UPWARD])
def test_an_upward_import_breaks_the_contract(checked, i):
    assert checked["upward"][i] is False


def test_the_three_former_cycles_are_gone(checked):
    # api -> verdict (generate records the null rate); nothing runs back up
    assert checked["chains"] == [True, False, False, False]
