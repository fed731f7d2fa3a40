"""fastfp: fast, faithful DNN fingerprinting.

Characteristic examples (C, RC, RC+GM, LTRC; Wang et al., IJCAI'21) and FBI, fingerprinting with
benign inputs (Maho, Furon, Le Merrer, TIFS'23), with compiled kernels where they pay off.
Heavy optional pieces (Triton, CuPy, the compiled extension) load lazily on first use.

The torch ops ``torch.ops.fastfp.highpass`` / ``torch.ops.fastfp.sign_step`` exist in every process
that imported both fastfp and torch, in either order (so a ``torch.export``-ed program that holds
them loads after ``import fastfp``), while ``import fastfp`` itself never imports torch: see
:func:`_register_ops_with_torch`.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

__version__ = "0.2.0.dev0"

# An editable install maps kernels/ and bench/ from the checkout's root into this package, and its
# import finder then lists that root on __path__, which would make every folder there (tests/, the
# fastfp/ folder itself) a subpackage. The mapped subpackages are found by name, not through
# __path__, so a folder that holds fastfp/ itself (a root above the package) is dropped.
if isinstance(__path__, list):  # always, for a regular package; kept safe for exotic loaders
    __path__[:] = [p for p in __path__
                   if not os.path.isfile(os.path.join(p, "fastfp", "__init__.py"))]

from . import backend  # noqa: E402  (light: no optional imports at module level)

_SUBMODULES = ("cexamples", "ops", "noise", "fbi", "metrics", "variants", "zoo", "attacks", "io",
               "store", "reference", "fingerprint", "distributed")


def __getattr__(name: str) -> Any:
    # Submodules load on first access so that `import fastfp` stays cheap.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Fingerprint":
        return importlib.import_module(".fingerprint", __name__).Fingerprint
    if name in ("highpass", "sign_step"):  # ops imports torch: only when used
        return getattr(importlib.import_module(".ops", __name__), name)
    raise AttributeError(f"module 'fastfp' has no attribute {name!r}")


# ---- torch.ops.fastfp.* without importing torch --------------------------------------------------
# torch takes seconds to import and `fastfp --help` must answer at once, so fastfp.ops (which
# registers the ops when it runs) is imported at `import fastfp` only when torch is already loaded;
# otherwise a one-shot import hook imports it right after torch's own module has finished running.

def _import_ops() -> None:
    """Import fastfp.ops (registering its torch ops); a failure warns and never raises, so that
    neither `import fastfp` nor `import torch` breaks because of it."""
    try:
        importlib.import_module(".ops", __name__)
    except Exception as exc:  # noqa: BLE001  (anything: this runs inside someone's import)
        warnings.warn(f"fastfp: torch.ops.fastfp.* not registered ({type(exc).__name__}: {exc}); "
                      f"`import fastfp.ops` shows the cause", RuntimeWarning, stacklevel=2)


class _TorchLoader:
    """Runs torch's own loader, then :func:`_import_ops`. torch's module gets its real loader
    back before it runs, so nothing inside torch sees this wrapper."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _remove_hook()  # only now: a failed import of torch can be retried
        _import_ops()


class _TorchImportHook:
    """A ``sys.meta_path`` finder that only looks at the name ``torch``: it asks the other finders
    for torch's spec and wraps the loader in :class:`_TorchLoader`, which removes this hook when
    torch is loaded (not at a mere ``importlib.util.find_spec("torch")``, which loads nothing)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "torch":
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None) if not _is_hook(finder) else None
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _TorchLoader(spec.loader)
                return spec
        return None  # torch is not installed: the import fails as it would without fastfp


def _is_hook(finder: object) -> bool:
    # by name, not isinstance: an importlib.reload(fastfp) makes a new class
    return type(finder).__name__ == "_TorchImportHook" and type(finder).__module__ == __name__


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not _is_hook(f)]


def _register_ops_with_torch() -> None:
    """Make ``torch.ops.fastfp.*`` resolve: now if torch is loaded, else once torch is imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        if not any(_is_hook(f) for f in sys.meta_path):
            sys.meta_path.insert(0, _TorchImportHook())
    elif not getattr(getattr(torch, "__spec__", None), "_initializing", False):
        _import_ops()
    # else: fastfp is imported while torch itself is being imported (a plugin of torch's); the
    # ops register on the first use of fastfp.ops, as they would without this function.


_register_ops_with_torch()

__all__ = ["__version__", "backend", "highpass", "sign_step", "Fingerprint", *_SUBMODULES]
