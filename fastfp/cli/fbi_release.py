"""``fastfp fbi import-predictions`` and ``fastfp fbi paper-tables``: released predictions into a
database, and the FBI paper's Tables III-VI on a database."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _user_error(msg: str) -> Exception:
    from fastfp.cli.main import UserError

    return UserError(msg)


def _note(text: str) -> None:
    print(f"fastfp fbi: note: {text}", file=sys.stderr)


def add_parsers(cmds: Any) -> None:
    """Add the two sub-commands to the ``fbi`` sub-parsers object ``cmds``."""
    i = cmds.add_parser(
        "import-predictions",
        help="import a released prediction folder (one <name>.npy per model) into a database",
        description="Import a folder laid out like the FBI authors' release: one <name>.npy per "
                    "model with (N,) or (N, k) integer labels, ground_truth.npy; a name FAMILY "
                    "is a vanilla model, VARIANT-FAMILY-PARAMS a variant of FAMILY. Other "
                    "files are skipped with a note; nothing is ever unpickled.")
    i.add_argument("dir", help="the prediction folder")
    i.add_argument("--out", required=True, help="database file to write (.safetensors)")
    i.add_argument("--families", metavar="MAP.json",
                   help="JSON object name -> family, for names outside the release layout")
    i.add_argument("--ground-truth", metavar="FILE",
                   help="true classes .npy (default: DIR/ground_truth.npy)")
    i.add_argument("--k", type=int, default=None,
                   help="top-k kept (default: the fewest columns of any model)")
    i.add_argument("--num-classes", type=int, default=None,
                   help="number of classes (default: the largest label + 1)")
    i.add_argument("--json", metavar="PATH", help="also write a JSON report")
    i.set_defaults(func=run_import_predictions)

    t = cmds.add_parser(
        "paper-tables",
        help="the FBI paper's protocol on a database: Tables III-VI, mean +- std over trials",
        description="The 15 % relative accuracy-drop filter on variants, then detection TPR at "
                    "5 % FPR by selection (III), by delegate (IV), by number of queries L (V) "
                    "and open-world identification with abstention (VI). Each cell is printed "
                    "beside the paper's number, with the difference and the actual FPR. "
                    "--protocol authors (the default) follows the FBI authors' released "
                    "scripts step by step (raw mutual information, delegate-based 30/70 split, "
                    "ROC curves averaged over trials); --protocol paper the paper's text "
                    "(Rajski distance, true entropy, tau at the empirical 5 %% quantile).")
    t.add_argument("--db", required=True, help="database file (.safetensors)")
    t.add_argument("--trials", type=int, default=20, help="trials per cell (default 20)")
    t.add_argument("--L", type=int, nargs="+", default=[20, 50, 100, 500], dest="L",
                   help="numbers of queries (default 20 50 100 500)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--protocol", default="authors", metavar="NAME",
                   help="authors (default) or paper")
    t.add_argument("--distance", default=None, metavar="NAME",
                   help="rajski, mi or mi_min (default: mi for authors, rajski for paper)")
    t.add_argument("--known-families", nargs="+", metavar="FAMILY", default=None,
                   help="Table VI of --protocol paper: these families are known, the others "
                        "unknown, in every trial (default: a random draw per trial). `fastfp "
                        "demo` prints the command that reproduces its table from the database "
                        "it saves")
    t.add_argument("--vanilla", nargs="+", metavar="FAMILY=MODEL", default=None,
                   help="--protocol authors: each family's vanilla model, where it is not the "
                        "member named like the family (e.g. an `fbi build` database)")
    t.add_argument("--max-drop", type=float, default=0.15,
                   help="relative accuracy drop a variant may have (default 0.15)")
    t.add_argument("--json", metavar="PATH", help="also write the tables as JSON")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_paper_tables)


def _report(args: argparse.Namespace, data: dict) -> None:
    if getattr(args, "json", None):
        from fastfp.io import write_json

        write_json(args.json, data)


def run_import_predictions(args: argparse.Namespace) -> int:
    """Import ``args.dir`` into ``args.out``; 0 on success."""
    from fastfp import io
    from fastfp.fbi.release import import_predictions, save_extending

    # outputs first: a missing folder is named before the prediction folder is read
    io.check_target(args.out, name="--out")
    if args.json:
        io.check_target(args.json, name="--json")
    families = None
    if args.families:
        families = io.read_json(args.families, name=args.families)  # a regular file only
        if not isinstance(families, dict) or not all(
                isinstance(v, str) for v in families.values()):
            raise _user_error(f"{args.families}: expected a JSON object name -> family")
    db, notes = import_predictions(args.dir, families=families, ground_truth=args.ground_truth,
                                   k=args.k, num_classes=args.num_classes)
    for n in notes:
        _note(n)
    added = save_extending(db, args.out)  # an existing database is extended or refused
    print(f"{args.out}: {added} of {db.num_models} models added "
          f"({len(db.family_names)} families, {db.num_inputs} inputs, top-{db.k}, "
          f"{db.num_classes} classes)")
    _report(args, {"out": str(args.out), "models": db.num_models,
                   "families": len(db.family_names), "inputs": db.num_inputs, "k": db.k,
                   "num_classes": db.num_classes, "notes": notes})
    return 0


def run_paper_tables(args: argparse.Namespace) -> int:
    """Print Tables III-VI for ``args.db``; 0 on success."""
    from fastfp import io
    from fastfp.fbi import DISTANCES, Database
    from fastfp.fbi.protocol import PROTOCOLS, format_tables, paper_tables

    # the choices first: a typo is named before any file is read
    for flag, value, choices in (("--protocol", args.protocol, PROTOCOLS),
                                 ("--distance", args.distance, DISTANCES)):
        if value is not None and value not in choices:
            raise _user_error(f"{flag}: expected one of {', '.join(map(repr, choices))}, got "
                              f"{value!r}")
    if args.protocol == "authors" and args.known_families:
        raise _user_error("--known-families: a setting of --protocol paper (the authors' "
                          "identification draws the known families per repeat)")
    vanilla = None
    if args.vanilla:
        pairs = [v.partition("=") for v in args.vanilla]
        bad = [v for v, (f, eq, m) in zip(args.vanilla, pairs, strict=True) if not (f and eq and m)]
        if bad:
            raise _user_error(f"--vanilla: expected FAMILY=MODEL, got {bad[0]!r}")
        vanilla = {f: m for f, _, m in pairs}
    if args.json:
        io.check_target(args.json, name="--json")
    db = Database.load(args.db)
    tables = paper_tables(db, trials=args.trials, Ls=args.L, seed=args.seed,
                          max_drop=args.max_drop, known_fams=args.known_families,
                          progress=not args.no_progress, protocol=args.protocol,
                          distance=args.distance, vanilla=vanilla)
    print(format_tables(tables), end="")
    _report(args, tables)
    return 0
