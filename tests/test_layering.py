"""No module of fastfp imports another module's private name (``from x import _name``): shared
helpers are public names of a named module (DESIGN.md, layering). import-linter checks modules,
not names, so this is checked here."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastfp"


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
