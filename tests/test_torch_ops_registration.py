"""``torch.ops.fastfp.*`` exist in any fresh process that imported fastfp and torch, in either
order, so a ``torch.export``-ed program that holds them loads after ``import fastfp``; and
``import fastfp`` alone still never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import fastfp

USES_OPS = ("import torch\n"
            "x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))\n"
            "torch.testing.assert_close(torch.ops.fastfp.highpass(x, 2), fastfp.highpass(x, 2))\n"
            "torch.testing.assert_close(torch.ops.fastfp.sign_step(x, -x, 0.1, 1, 0.0, 1.0),\n"
            "                           fastfp.sign_step(x, -x, 0.1, k=1))\n")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


# Each program names torch.ops.fastfp.* before anything touches fastfp.ops or fastfp.highpass.
ORDERS = {
    "fastfp, torch": "import fastfp, torch\n",
    "torch, fastfp": "import torch, fastfp\n",
    "fastfp, then torch.nn": "import fastfp\nimport torch.nn\n",
    "fastfp.cli, then torch": "import fastfp.cli.main\nimport torch\nimport fastfp\n",
    # a probe for torch that loads nothing must not use up the hook
    "fastfp, find_spec, torch": "import fastfp, importlib.util\nimportlib.util.find_spec('torch')\n"
                                "import torch\n",
}


@pytest.mark.parametrize("order", ORDERS)
def test_ops_resolve_after_import_in_either_order(order):
    code = (ORDERS[order]
            + "assert torch.ops.fastfp.highpass.default is not None\n"
            + "assert torch.ops.fastfp.sign_step.default is not None\n"
            + USES_OPS
            # nothing of the import hook stays behind, and torch keeps its own loader
            + "import sys\n"
            + "assert not [f for f in sys.meta_path if type(f).__module__.startswith('fastfp')]\n"
            + "assert not type(torch.__spec__.loader).__module__.startswith('fastfp')\n"
            + "assert torch.__loader__ is torch.__spec__.loader\n")
    run = _python(code)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


def test_import_fastfp_alone_does_not_import_torch():
    run = _python("import sys, fastfp\nprint('torch' in sys.modules)")
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr


def test_a_failing_registration_never_breaks_import_torch():
    run = _python("import sys, warnings, fastfp\n"
                  "sys.modules['fastfp.ops'] = None  # makes `import fastfp.ops` fail\n"
                  "with warnings.catch_warnings(record=True) as caught:\n"
                  "    warnings.simplefilter('always')\n"
                  "    import torch\n"
                  "print(torch.ones(2).sum().item())\n"
                  "print(caught[0].category.__name__, caught[0].message)")
    assert run.returncode == 0, run.stderr
    total, warning = run.stdout.splitlines()
    assert total == "2.0"
    assert warning.startswith("RuntimeWarning fastfp: torch.ops.fastfp.* not registered")


class _Step(torch.nn.Module):
    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return fastfp.sign_step(fastfp.highpass(x, 2), g, 0.1, k=1)


LOAD_AND_RUN = """
ep = torch.export.load({path!r})
gen = torch.Generator().manual_seed(0)
x, g = torch.rand(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
torch.testing.assert_close(ep.module()(x, g), fastfp.sign_step(fastfp.highpass(x, 2), g, 0.1, k=1))
print("ran")
"""


def test_exported_program_loads_in_a_fresh_process(tmp_path):
    x, g = torch.rand(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    program = torch.export.export(_Step(), (x, g))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert targets == {"fastfp.highpass.default", "fastfp.sign_step.default"}
    path = tmp_path / "step.pt2"
    torch.export.save(program, str(path))
    for imports in ("import fastfp\nimport torch\n", "import torch\nimport fastfp\n"):
        run = _python(imports + LOAD_AND_RUN.format(path=str(path)))
        assert run.returncode == 0 and run.stdout.strip() == "ran", (imports, run.stderr)
    # the control: without `import fastfp` the program does not load (so the above proves it)
    run = _python("import torch\n" + LOAD_AND_RUN.format(path=str(path)).replace(
        "fastfp.sign_step(fastfp.highpass(x, 2), g, 0.1, k=1)", "None"))
    assert run.returncode != 0 and "fastfp" in run.stderr
