"""The ``fastfp`` command's contract: --version, --help pages with examples, one-line usage
errors, and a start-up that does not import torch."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastfp
from fastfp.cli.main import HELP, SUBCOMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]


def test_version_prints_the_version_only(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"{fastfp.__version__}\n"


def test_every_subcommand_is_listed_with_its_help(capsys):
    assert set(HELP) == set(SUBCOMMANDS)
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
    assert "decide whether a suspect model is a copy" in out


def test_full_parser_help_matches_the_listing():
    # The listing in HELP is what each sub-command registers, so --help cannot drift.
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert helps == HELP


@pytest.mark.parametrize("command", ["generate", "verify", "evaluate"])
def test_subcommand_help_has_a_description_and_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "examples:\n  fastfp " + command in out  # the epilog keeps its line breaks
    assert len(out.split("\n\n")[1]) > 80  # the description paragraph


@pytest.mark.parametrize("argv", [["verify"], ["generate", "m", "--out"], ["nosuch"],
                                  ["verify", "a", "b", "--alpha", "0.1", "--threshold", "0.5"]])
def test_usage_errors_are_one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert ": error: " in err and "--help" in err


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in SUBCOMMANDS),
                                  ["fbi", "detect", "--help"], ["fbi", "paper-tables", "--help"]])
def test_help_does_not_import_torch(argv):
    code = (f"import sys\nfrom fastfp.cli.main import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0 and run.stderr.strip() == "False", run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["verify", "--help"]])
def test_help_answers_well_under_a_second(argv):
    best = float("inf")
    for _ in range(3):  # the best of three: a shared machine can stall one run
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fastfp", *argv], check=True, cwd=REPO,
                       capture_output=True, timeout=120)
        best = min(best, time.perf_counter() - start)
    assert best < 1.5


def _console_script() -> Path:
    script = Path(sys.executable).parent / "fastfp"
    if not script.is_file():
        pytest.skip(f"no `fastfp` console script next to {sys.executable} (package not installed)")
    return script


def test_console_script_help_is_fast_and_does_not_import_torch():
    """`fastfp --help` answers in under 0.5 s (the best of 3 runs) and never imports torch."""
    script = _console_script()
    run = subprocess.run([sys.executable, "-X", "importtime", str(script), "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0 and "COMMAND" in run.stdout, run.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()
                if line.startswith("import time:")}
    assert "fastfp.cli.main" in imported  # the check below looks at a real import trace
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    if load > 1.5:
        pytest.skip(f"timing not asserted: load average {load:.1f} per core (> 1.5) on this "
                    f"machine makes a 0.5 s bound meaningless; the torch check above passed")
    best = float("inf")
    for _ in range(3):  # the best of three: a shared machine can stall one run
        start = time.perf_counter()
        subprocess.run([str(script), "--help"], check=True, cwd=REPO, capture_output=True,
                       timeout=120)
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, f"fastfp --help took {best:.2f} s (best of 3)"
