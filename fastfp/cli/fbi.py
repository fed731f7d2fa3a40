"""``fastfp fbi``: FBI databases, detection / identification of a black box, distance maps.

    fastfp fbi build --spec models.json --inputs zoo:2000 --k 3 --out db.safetensors
    fastfp fbi detect --db db.safetensors --family cnn --blackbox suspect.onnx
    fastfp fbi identify --db db.safetensors --blackbox http://127.0.0.1:8080/v2/models/suspect
    fastfp fbi export-queries --db db.safetensors --out queries/
    fastfp fbi distances --db db.safetensors --png dist.png --embedding-png tsne.png
    fastfp fbi law --db db.safetensors --k 1 3
    fastfp fbi import-predictions released/ --out paper.safetensors
    fastfp fbi paper-tables --db paper.safetensors --json tables.json

Decisions are exit codes: ``detect`` 0 member of the family, 1 not; ``identify`` 0 a family
named, 1 abstained or rejected; 2 an error (one line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastfp.cli.loader import (
    add_suspect_timeout,
    check_device,
    timeout_of,
    trust_warnings,
    zoo_models,
)
from fastfp.cli.main import SubParsers

if TYPE_CHECKING:
    import numpy as np

SPEC_FORMAT = """model list (--spec, JSON or TOML):
  {"models": [{"name": "a", "family": "F", "zoo": "cnn-s0"},
              {"name": "b", "family": "G", "path": "b.onnx"},
              {"name": "c", "family": "H", "arch": "resnet18", "weights": "c.safetensors",
               "num_classes": 10}],
   "inputs": "zoo:2000", "labels": "labels.npy"}
  Every entry has a unique "name", a "family" and one source: "zoo" (a default-zoo model),
  "path" (an ONNX file) or "arch" (a torchvision/timm architecture with a safetensors state dict
  in "weights"; a random init seeded by "seed" without it). The models come from others, so they
  load only in formats that cannot run code; pickles, TorchScript and .pt2 need --trust-code.
  Files named in the spec lie in its folder and may not leave it (.., absolute paths, symlinks
  out) unless --allow-absolute-paths. The whole list, every file it names and the output folder
  are checked before the first model is queried.
inputs: zoo:N (N benign digits of the default zoo, with ground truth), a .npy / .npz / .pt tensor
  file or a folder of PNG images (uint8 images are converted to 0..1 with a note); --labels gives
  the ground truth (else the majority vote of the models)."""

BLACKBOX_FORMAT = """black box (--blackbox):
  http(s)://HOST:PORT/v2/models/NAME[/versions/V]  a model served over the Open Inference
      Protocol (KServe v2 REST: Triton, KServe, MLServer, ...); only the selected inputs are sent,
      answers are cached (--cache) and counted against --max-queries
  onnx:PATH or PATH.onnx       an ONNX model run locally by onnxruntime
  zoo:NAME, arch:NAME[:WEIGHTS.safetensors]   a default-zoo model / an architecture
  db:NAME                      a model of the database (simulation)
  ANSWERS.npy/.npz/.pt/.csv/.json   its answers on every database input: top-k labels (one row
      per input), or logits / probabilities (top-k taken, with a note)
  The database's inputs come from the database itself (built with --store-inputs) or --inputs."""


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the format blocks of the epilogs as written."""


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("fbi", help="FBI: fingerprinting with benign inputs (database, detect, "
                                   "identify, distances)",
                       description=__doc__, formatter_class=_Help)
    cmds = p.add_subparsers(dest="fbi_command", metavar="SUBCOMMAND", required=True)

    def command(name: str, helptext: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return cmds.add_parser(name, help=helptext, description=helptext, epilog=epilog,
                               formatter_class=_Help)

    b = command("build", "query a model list on benign inputs and store their top-k outputs in a "
                "database (an existing one is extended; a second build on the same file waits "
                "for the first)", SPEC_FORMAT)
    b.add_argument("--spec", required=True,
                   help="JSON or TOML model list (names, families, model sources)")
    b.add_argument("--inputs",
                   help="zoo:N, a .npy / .npz / .pt tensor file or a PNG folder (default: the "
                        "spec's 'inputs')")
    b.add_argument("--labels", help="ground-truth classes (.pt / .npy); default: majority vote")
    b.add_argument("--k", type=int, default=3, help="top-k kept per output (default 3)")
    b.add_argument("--out", required=True,
                   help="database file (.safetensors); an existing one is resumed")
    b.add_argument("--store-inputs", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the inputs in the database, so detect / identify need no --inputs "
                        "(default: when they take at most 256 MiB)")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--device", default=None, help="device for the models (default: cpu)")
    b.add_argument("--checkpoint-s", type=float, default=30.0,
                   help="rewrite --out at most this often while building (seconds; 0: after every "
                        "model; default 30). It is always written at the end and on interruption")
    b.add_argument("--shard-dir", default=None,
                   help="build in per-(model, input chunk) shards in this folder (resumable; "
                        "implied under torchrun, default OUT.shards); rank 0 merges into --out")
    b.add_argument("--json", metavar="PATH", help="also write a JSON report")
    b.add_argument("--allow-absolute-paths", action="store_true",
                   help="let the spec name files outside its folder (absolute paths, '..')")
    _add_trust_code(b)
    add_suspect_timeout(b)
    b.set_defaults(func=run_build)

    for name, helptext in (
        ("detect", "is the black box a member of FAMILY? (exit 0 yes, 1 no, 2 error)"),
        ("identify", "which family is the black box? (exit 0 a family named, 1 abstained or "
                     "rejected, 2 error)"),
    ):
        d = command(name, helptext, BLACKBOX_FORMAT)
        d.add_argument("--db", required=True, help="database file")
        if name == "detect":
            d.add_argument("--family", required=True, help="hypothesis family")
        d.add_argument("--blackbox", required=True, help="what to check (see below)")
        _add_query_args(d, name)
        d.add_argument("--mode", choices=("open", "walled"), default="open",
                       help="open world (statistical, default) or walled garden (greedy: assumes "
                            "the black box is one of the database's models)")
        d.add_argument("--max-queries", type=int, default=None,
                       help="budget of images sent to the black box (an error when exceeded)")
        d.add_argument("--cache", metavar="PATH",
                       help="answer cache of a served black box (default: in ~/.cache/fastfp); "
                            "a repeated or resumed run never sends an image twice")
        d.add_argument("--no-cache", action="store_true", help="keep no answer cache")
        d.add_argument("--queries", metavar="QUERIES.json",
                       help="the answers file holds one row per exported query (the "
                            "queries.json that export-queries wrote), not per database input")
        d.add_argument("--normalize", metavar="imagenet|none|M1,M2,M3/S1,S2,S3", default=None,
                       help="what a served / ONNX black box expects: (x - mean) / std of the "
                            "0..1 images (default: none)")
        d.add_argument("--timeout", type=float, default=30.0,
                       help="seconds per request to a served black box (default 30)")
        d.add_argument("--batch-size", type=int, default=64)
        d.add_argument("--json", metavar="PATH", help="also write a JSON report")
        _add_trust_code(d)
        add_suspect_timeout(d)
        d.set_defaults(func=run_detect if name == "detect" else run_identify)

    e = command("export-queries", "write the inputs the open world would send a black box (PNG "
                "or .npy), to query a remote API by hand; answer them in that order (CSV / JSON "
                "/ .npy rows) and give detect / identify the answers file with --queries "
                "OUT/queries.json")
    e.add_argument("--db", required=True, help="database file")
    e.add_argument("--family", default=None,
                   help="the detection queries of this family (default: the identification ones)")
    _add_query_args(e, "identify")
    e.add_argument("--out", required=True, help="folder for the images (created)")
    e.add_argument("--format", choices=("png", "npy"), default="png")
    e.epilog = ("Then: fastfp fbi identify --db DB --blackbox answers.csv --queries "
                "OUT/queries.json (with the same --L, --selection and --seed).")
    e.set_defaults(func=run_export_queries)

    m = command("distances", "pairwise Rajski distances of the database's models (+ PNG figures)")
    m.add_argument("--db", required=True)
    m.add_argument("--L", type=int, default=None, help="use L random inputs (default: all)")
    m.add_argument("--k", type=int, default=None, help="S_k with this k (default: the database's)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--png", help="write a heatmap of the distance matrix")
    m.add_argument("--embedding-png",
                   help="write a 2-D embedding (t-SNE on the precomputed distances)")
    m.add_argument("--tile-rows", type=int, default=256,
                   help="under torchrun: rows of the matrix per tile, spread over the ranks")
    m.add_argument("--json", metavar="PATH", help="also write the matrix as JSON")
    m.set_defaults(func=run_distances)

    law = command("law", "fit E(L) ~ a E|F| nF / k + beta(k) with greedy identification")
    law.add_argument("--db", required=True)
    law.add_argument("--k", type=int, nargs="+", default=None,
                     help="k values (default: 1 .. database k)")
    law.add_argument("--trials", type=int, default=20)
    law.add_argument("--seed", type=int, default=0)
    law.add_argument("--json", metavar="PATH")
    law.set_defaults(func=run_law)

    from fastfp.cli.fbi_release import add_parsers as add_release_parsers

    add_release_parsers(cmds)


def _add_query_args(d: argparse.ArgumentParser, name: str) -> None:
    """The open world's settings (the queries it picks and its threshold) and --inputs."""
    d.add_argument("--inputs", help="the database's inputs, if it does not store them")
    d.add_argument("--L", type=int, default=100, help="queries (open world; default 100)")
    d.add_argument("--selection", default="30/70" if name == "detect" else "entropy",
                   help="input selection: all, 50/50, 30/70, entropy")
    d.add_argument("--delegates", default="close",
                   help="close, median, far, or a comma list (compound)")
    d.add_argument("--fpr", type=float, default=0.05,
                   help="target false-positive rate (default 0.05)")
    d.add_argument("--trials", type=int, default=20, help="random draws used to set tau")
    d.add_argument("--seed", type=int, default=0,
                   help="seed of the query selection and of the trials (default 0)")


def _add_trust_code(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-code", action="store_true",
                   help="allow model files that run code when loaded (pickle, TorchScript, .pt2): "
                        "only for files you trust; prints a warning")


# --- loading -----------------------------------------------------------------------------------

def _user_error(msg):
    from fastfp.cli.main import UserError

    return UserError(msg)


def _note(text: str) -> None:
    print(f"fastfp fbi: note: {text}", file=sys.stderr)


# zoo:N draws N images of 1x32x32 floats (4 KiB each) and augments them: 1e6 is 4 GiB
MAX_ZOO_INPUTS = 1_000_000


def _check_outputs(args, *flags: str) -> None:
    """Every output file of ``flags`` (e.g. "json", "png") can be written: checked before any
    model runs or any image is sent, so that a missing folder never wastes the work."""
    from fastfp.io import check_target

    for flag in flags:
        value = getattr(args, flag, None)
        if value:
            check_target(value, "--" + flag.replace("_", "-"))


def _inputs(spec_value, labels_path):
    """(inputs, labels or None) from zoo:N, a tensor file or a PNG folder."""
    from fastfp.fbi import answers

    if spec_value is None:
        raise _user_error("inputs: give --inputs (zoo:N, a tensor file or a PNG folder) or "
                          "'inputs' in the spec")
    labels = None if labels_path is None else _labels(labels_path)
    if str(spec_value).startswith("zoo:"):
        from fastfp import zoo

        count = str(spec_value)[4:]
        if not count.isdigit() or int(count) < 1:
            raise _user_error(f"inputs: expected zoo:N with N a positive number, got "
                              f"{spec_value!r}")
        if int(count) > MAX_ZOO_INPUTS:
            raise _user_error(f"inputs: zoo:N draws at most {MAX_ZOO_INPUTS} inputs, got "
                              f"{spec_value!r}")
        x, y = zoo.benign_inputs(int(count))
        return x, (y.numpy() if labels is None else labels)
    x, notes = answers.read_inputs(spec_value)
    for n in notes:
        _note(n)
    return x, labels


def _labels(path: str) -> np.ndarray:
    """Ground-truth classes: one integer per input, in any format answers are read in."""
    from fastfp.fbi import answers

    y, notes = answers.read_answers(path, num_inputs=None, k=1)
    for n in notes:
        _note(n)
    return y[:, 0]


def _spec_path(value, base: Path, allow_absolute: bool, what: str):
    """A file named in the spec lies in its folder, like the spec's model files (not in the cwd)."""
    from fastfp import suspects

    if value is None or str(value).startswith("zoo:"):
        return value
    return str(suspects.confined_path(str(value), base, allow_absolute=allow_absolute,
                                      what=what))


def _report(args, data: dict) -> None:
    if getattr(args, "json", None):
        from fastfp.io import write_json

        write_json(args.json, data)


# --- sub-commands ------------------------------------------------------------------------------

def run_build(args: argparse.Namespace) -> int:
    with trust_warnings():  # a model list's code-running files load (with --trust-code) later
        return _build(args)


def _build(args: argparse.Namespace) -> int:
    from fastfp import fbi, suspects
    from fastfp.io import check_target

    # everything is checked before the first model is queried: device, output, spec, files
    device = check_device(args.device, "--device")
    check_target(args.out, "--out")
    _check_outputs(args, "json")
    spec = suspects.read_model_list(args.spec)
    base = Path(args.spec).resolve().parent
    absolute = args.allow_absolute_paths
    entries = spec["models"]
    for e in entries:
        suspects.check_entry(e, base, trust_code=args.trust_code, allow_absolute=absolute)
    x, labels = _inputs(args.inputs or _spec_path(spec.get("inputs"), base, absolute, "inputs"),
                        args.labels or _spec_path(spec.get("labels"), base, absolute, "labels"))
    families = {str(e["name"]): str(e["family"]) for e in entries}
    models = list(suspects.deferred_models(entries, base, trust_code=args.trust_code,
                                           allow_absolute=absolute, named=zoo_models(),
                                           timeout=timeout_of(args)))
    from fastfp import distributed as dd

    ctx = dd.init()
    common = dict(k=args.k, families=families, labels=labels, batch_size=args.batch_size,
                  path=args.out, progress=True, store_inputs=args.store_inputs)
    if ctx.distributed or args.shard_dir:
        if ctx.distributed and device is None:
            device = dd.device_for(ctx)
        db = fbi.build_sharded(models, x, device=device, ctx=ctx,
                               shard_dir=args.shard_dir or f"{args.out}.shards", **common)
        if db is None:  # not rank 0: rank 0 merges and reports
            return 0
    else:
        db = fbi.Database.build(models, x, device=device, checkpoint_s=args.checkpoint_s,
                                **common)
    print(f"{db!r} -> {args.out}")
    _report(args, {"database": args.out, "models": db.names, "families": db.families, "k": db.k,
                   "num_inputs": db.num_inputs, "num_classes": db.num_classes,
                   "inputs_stored": db.inputs is not None})
    return 0


def _database_inputs(args, db):
    """The database's inputs: stored in it, or --inputs (checked against its digest)."""
    from fastfp import fbi

    if args.inputs is None:
        if db.inputs is None:
            raise _user_error("inputs: the database does not store its inputs; give --inputs "
                              "(or rebuild it with --store-inputs)")
        return db.inputs
    x, _ = _inputs(args.inputs, None)
    if db.digest is not None and fbi.database.inputs_digest(x) != db.digest:
        raise _user_error("inputs: differ from the inputs the database was built on")
    return x


def _cache_path(args, what: str) -> Path | None:
    import hashlib

    from fastfp import zoo
    from fastfp.io import check_target

    if args.no_cache:
        return None
    if args.cache:
        return check_target(args.cache, "--cache")  # a symlink or a FIFO is refused up front
    folder = zoo.cache_dir() / "answers"
    folder.mkdir(parents=True, exist_ok=True)
    return check_target(folder / f"{hashlib.sha256(what.encode()).hexdigest()[:24]}.jsonl",
                        "cache")


def _blackbox(args, db):
    """The black box --blackbox names (:func:`fastfp.blackbox.resolve`, the one spec grammar):
    answers given as a file or a database model are its outputs on every input; a model or a
    service is asked only the inputs the decision needs."""
    from fastfp import blackbox, suspects

    spec = args.blackbox
    if args.max_queries is not None and args.max_queries < 1:
        raise _user_error(f"--max-queries: expected a positive number, got {args.max_queries}")
    if args.batch_size < 1:
        raise _user_error(f"--batch-size: expected a positive number, got {args.batch_size}")
    if not args.timeout > 0:  # NaN too
        raise _user_error(f"--timeout: expected seconds > 0, got {args.timeout}")
    normalize = None if args.normalize is None else suspects.parse_normalize(args.normalize,
                                                                             "--normalize")
    try:
        with trust_warnings():
            box = blackbox.resolve(
                spec, lambda: _database_inputs(args, db), db.k, trust_code=args.trust_code,
                named=zoo_models(), recorded=db.outputs, num_inputs=db.num_inputs,
                num_classes=db.num_classes, queries=args.queries, normalize=normalize,
                timeout=args.timeout, batch_size=args.batch_size, max_queries=args.max_queries,
                cache=_cache_path(args, spec) if blackbox.is_service(spec) else None,
                suspect_timeout=timeout_of(args))
    except (ValueError, TypeError, OSError) as exc:
        msg = str(exc).removeprefix("blackbox: ").removeprefix("path: ")
        raise _user_error(f"--blackbox: {msg}") from None
    for n in getattr(box, "notes", ()):
        _note(n)
    _probe(box, spec)
    return box


def _probe(box, spec: str) -> None:
    """A local model (zoo, arch, ONNX, a trusted file) is run once on the first input before
    any decision, so that a model that cannot take the database's inputs (3 channels for 1,
    say) is one line naming --blackbox, not a traceback from inside the model."""
    from fastfp import blackbox, suspects

    run = box.fn if isinstance(box, blackbox.FunctionBlackBox) else \
        box.model if isinstance(box, blackbox.Onnx) else None
    if run is None:
        return
    import torch

    x = box.x[:1].detach().to("cpu", torch.float32)
    if box.normalize is not None:
        x = (x - box.normalize[0]) / box.normalize[1]
    try:
        with torch.no_grad():
            run(x)
    except suspects.SuspectError:
        raise  # the suspect's own failure (a timeout, say): it names the model already
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _user_error(f"--blackbox {spec}: cannot run on the database's inputs of shape "
                          f"{tuple(box.x.shape[1:])} ({first})") from None



def _open_world(args, db):
    from fastfp import fbi

    delegates = tuple(d.strip() for d in args.delegates.split(",") if d.strip())
    sel = args.selection
    kwargs = {"selection": sel} if args.fbi_command == "detect" else {"identify_selection": sel}
    return fbi.OpenWorld(L=args.L, delegates=delegates, fpr=args.fpr, trials=args.trials,
                         seed=args.seed, **kwargs).fit(db, progress=True)


def _sent(box) -> dict:
    """What the black box was sent: requests and images (0 for answers given in advance)."""
    from fastfp import blackbox

    if not isinstance(box, blackbox.BlackBox):
        return {"requests": 0, "images": 0}
    rep = box.report()
    print(f"black box: {rep.get('queries', 0)} requests, {rep.get('images', 0)} images sent"
          + (f", {rep['cached']} answers from the cache" if rep.get("cached") else ""))
    return {"requests": rep.get("queries", 0), "images": rep.get("images", 0), **rep}


def _walled_warning(consistent: bool) -> None:
    if not consistent:
        print("fastfp fbi: warning: the black box's answers match no model of the database; the "
              "walled garden assumes it is one of them, so this decision means little (use "
              "--mode open)", file=sys.stderr)


@contextlib.contextmanager
def _within_budget():
    """--max-queries reached: a user error (the answers received so far stay cached)."""
    from fastfp import blackbox

    try:
        yield
    except blackbox.BudgetExceeded as exc:
        raise _user_error(str(exc)) from None


def run_detect(args: argparse.Namespace) -> int:
    with _within_budget():
        return _detect(args)


def run_identify(args: argparse.Namespace) -> int:
    with _within_budget():
        return _identify(args)


def _detect(args: argparse.Namespace) -> int:
    import numpy as np

    from fastfp import fbi

    _check_outputs(args, "json")  # the cache is checked where its path is chosen
    db = fbi.Database.load(args.db)
    db.members(args.family)  # unknown family -> clear error before any work
    box = _blackbox(args, db)
    if args.mode == "walled":
        r = fbi.greedy_detect(db.topk, np.asarray(db.families) == args.family, box,
                              max_queries=args.max_queries, seed=args.seed)
        print(f"walled garden detection of {args.family!r}: {r.decision} after L = {r.L} queries "
              f"{r.queries}")
        _walled_warning(bool(r.family_left or r.others_left))
        _report(args, {"mode": "walled", "family": args.family, "decision": r.decision, "L": r.L,
                       "queries": r.queries, "sent": _sent(box)})
        return 0 if r.decision == "positive" else 1
    ow = _open_world(args, db)
    r = ow.detect(box, args.family)
    verdict = "positive" if r.positive else "negative"
    print(f"open-world detection of {args.family!r}: {verdict} (D = {r.distance:.4f}, "
          f"tau = {r.tau:.4f}, L = {len(r.queries)}, FPR target {args.fpr})")
    _report(args, {"mode": "open", "family": args.family, "positive": bool(r.positive),
                   "distance": r.distance, "tau": r.tau, "L": len(r.queries),
                   "queries": r.queries.tolist(), "sent": _sent(box), "fit": ow.report()})
    return 0 if r.positive else 1


def _identify(args: argparse.Namespace) -> int:
    from fastfp import fbi

    _check_outputs(args, "json")
    db = fbi.Database.load(args.db)
    box = _blackbox(args, db)
    if args.mode == "walled":
        r = fbi.greedy_identify(db.topk, db.families, box, max_queries=args.max_queries,
                                seed=args.seed)
        print(f"walled garden identification: {r.family if r.family is not None else '-'} "
              f"({r.status}) after L = {r.L} queries {r.queries}")
        _walled_warning(r.status != "unknown")
        _report(args, {"mode": "walled", "family": r.family, "status": r.status, "L": r.L,
                       "queries": r.queries, "sent": _sent(box)})
        return 0 if r.status == "identified" else 1
    ow = _open_world(args, db)
    r = ow.identify(box)
    print(f"open-world identification: {r.family if r.family is not None else '-'} ({r.status}; "
          f"tau = {r.tau:.4f}, L = {len(r.queries)})")
    for f, d in sorted(r.distances.items(), key=lambda kv: kv[1]):
        print(f"  {f:<24} D = {d:.4f}")
    _report(args, {"mode": "open", "family": r.family, "status": r.status,
                   "distances": r.distances, "tau": r.tau, "L": len(r.queries),
                   "queries": r.queries.tolist(), "sent": _sent(box), "fit": ow.report()})
    return 0 if r.status == "identified" else 1


def run_export_queries(args: argparse.Namespace) -> int:
    import numpy as np

    from fastfp import fbi
    from fastfp.io import PNG_MODES, check_target, png_bytes, write_bytes, write_json

    out = _check_folder(args.out, "--out")
    if out.is_dir():  # what it would replace is no link or FIFO: refused before any work
        for f in (out / "queries.json", out / "queries.npy", *out.glob("[0-9]*.png")):
            check_target(f, "--out")
    db = fbi.Database.load(args.db)
    if args.family is not None:
        db.members(args.family)
    x = _database_inputs(args, db)
    ow = _open_world(args, db)
    queries = ow.queries(args.family)
    images = x[np.asarray(queries)]
    if args.format == "png":
        if images.shape[1] not in PNG_MODES:
            raise _user_error(f"--format: PNG holds 1 or 3 channels, the inputs have "
                              f"{images.shape[1]}; use --format npy")
        if not bool(((images * 255).round() == images * 255).all()):
            _note("the inputs are not 8-bit images: the PNG files round them to 1/255 steps "
                  "(--format npy keeps them exactly)")
    out.mkdir(parents=True, exist_ok=True)
    if args.format == "npy":
        import io

        buf = io.BytesIO()
        np.save(buf, images.numpy())
        write_bytes(out / "queries.npy", buf.getvalue(), name="--out")
    else:
        for i, data in enumerate(png_bytes(images)):
            write_bytes(out / f"{i:05d}.png", data, name="--out")
    write_json(out / "queries.json", {"database": str(args.db), "family": args.family,
                                      "indices": np.asarray(queries).tolist(),
                                      "format": args.format}, sealed=True)
    print(f"{len(queries)} query images -> {out} (answer them in this order)")
    return 0


def _check_folder(value: str, flag: str) -> Path:
    """An output folder: a folder that can be written in, or one that can be created."""
    import os

    out = Path(value)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise _user_error(f"{flag}: {value!r} exists and is not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise _user_error(f"{flag}: folder {value!r} is not writable")
        return out
    parent = out.parent
    while not parent.exists() and parent != parent.parent:  # created with its parents
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise _user_error(f"{flag}: cannot create {value!r} ({str(parent)!r} is not a "
                          "writable folder)")
    return out


def run_distances(args: argparse.Namespace) -> int:
    import numpy as np

    from fastfp import fbi

    _check_outputs(args, "png", "embedding_png", "json")
    db = fbi.Database.load(args.db)
    sym = db.symbols(args.k)
    if args.L is not None:
        if not 1 <= args.L <= db.num_inputs:
            raise ValueError(f"L: expected 1..{db.num_inputs} (the database's inputs), got "
                             f"{args.L}")
        cols = np.sort(np.random.default_rng(args.seed).choice(db.num_inputs, args.L,
                                                               replace=False))
        sym = sym[:, cols]
    from fastfp import distributed as dd

    ctx = dd.init()
    if ctx.distributed:  # tiles of rows across the ranks, gathered on rank 0
        import torch

        tiled = fbi.pairwise_rajski_tiled(torch.from_numpy(np.ascontiguousarray(sym)), ctx=ctx,
                                          tile_rows=args.tile_rows)
        if tiled is None:
            return 0
        d = tiled.numpy()
    else:
        d = np.asarray(fbi.pairwise_rajski(sym))
    if len(db.names) <= 40:
        width = max(len(n) for n in db.names)
        print(" " * width + "  " + " ".join(f"{i:>6d}" for i in range(len(db.names))))
        for i, name in enumerate(db.names):
            print(f"{name:<{width}}  " + " ".join(f"{v:6.3f}" for v in d[i]))
    else:
        print(f"{len(db.names)} x {len(db.names)} distances (min {d.min():.3f}, "
              f"median {np.median(d):.3f}, max {d.max():.3f}); use --json / --png for all of them")
    if args.png:
        _heatmap(d, db, args.png)
        print(f"heatmap -> {args.png}")
    if args.embedding_png:
        _embedding(d, db, args.embedding_png, args.seed)
        print(f"embedding -> {args.embedding_png}")
    _report(args, {"names": db.names, "families": db.families, "distances": d.tolist(),
                   "L": int(sym.shape[1]), "k": int(args.k or db.k)})
    return 0


def _heatmap(d, db, path):
    import numpy as np

    from fastfp import plots

    order = np.argsort(np.asarray(db.families), kind="stable")  # families as diagonal blocks
    plots.heatmap(d[np.ix_(order, order)], [db.families[i] for i in order], path,
                  names=[db.names[i] for i in order])


def _embedding(d, db, path, seed):
    from sklearn.manifold import TSNE

    from fastfp import plots

    n = d.shape[0]
    if n < 3:
        raise ValueError("embedding-png: a 2-D embedding needs at least 3 models, the database "
                         f"has {n}")
    # exact t-SNE for the usual few hundred models (Barnes-Hut only pays off beyond that)
    xy = TSNE(n_components=2, metric="precomputed", init="random", random_state=seed,
              perplexity=min(30.0, (n - 1) / 3), method="exact" if n <= 500 else "barnes_hut",
              ).fit_transform(d.copy())  # TSNE squares precomputed distances in place
    plots.embedding(xy, db.families, path)


def run_law(args: argparse.Namespace) -> int:
    from fastfp import fbi

    _check_outputs(args, "json")
    db = fbi.Database.load(args.db)
    ks = args.k or list(range(1, db.k + 1))
    res = fbi.query_law_experiment(db.topk, db.families, k_values=ks, trials=args.trials,
                                   seed=args.seed,
                                   progress=True)
    for r in res["records"]:
        print(f"k={r['k']} nF={r['n_families']} E|F|={r['family_size']:.2f}: E(L) = "
              f"{r['queries']:.2f}")
    fit = res["fit"]
    betas = ", ".join(f"beta({k}) = {b:.3f}" for k, b in fit["beta"].items())
    print(f"fit: E(L) ~ {fit['slope']:.4f} E|F| nF / k + beta(k); {betas}; R^2 = {fit['r2']:.3f} "
          f"(paper: slope ~ 0.002 on ImageNet)")
    _report(args, res)
    return 0
