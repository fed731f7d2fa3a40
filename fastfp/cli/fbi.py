"""``fastfp fbi``: FBI databases, detection / identification of a black box, distance maps.

    fastfp fbi build --spec models.json --inputs zoo:2000 --k 3 --out db.safetensors
    fastfp fbi detect --db db.safetensors --family cnn --blackbox suspect.pt [--mode open]
    fastfp fbi identify --db db.safetensors --blackbox outputs.npy [--mode walled]
    fastfp fbi distances --db db.safetensors --png dist.png --embedding-png tsne.png
    fastfp fbi law --db db.safetensors --k 1 3

A model list (JSON or TOML) names each model and its family:
``{"models": [{"name": "a", "family": "F", "zoo": "cnn-s0"}, {"name": "b", "family": "G",
"path": "b.onnx"}, {"name": "c", "family": "H", "arch": "resnet18", "weights": "c.safetensors",
"num_classes": 10}], "inputs": "zoo:2000"}``. The models come from others, so they load only in
formats that cannot run code: ``path`` is an ONNX file, ``arch`` a torchvision/timm architecture
with a safetensors state dict (``weights``; a seeded random init without it, ``seed``); pickles,
TorchScript and .pt2 files need ``--trust-code``. Files named in the spec (models, weights,
``inputs``, ``labels``) lie in the spec's folder and may not leave it (``..``, absolute paths,
symlinks out) unless ``--allow-absolute-paths``.
Inputs: ``zoo:N`` (N benign digits of the default zoo, with ground truth) or a ``.pt`` / ``.npy``
tensor file (then ``--labels`` optionally gives the ground truth; else majority vote).
A black box is an ONNX file, ``zoo:NAME``, ``arch:NAME[:WEIGHTS]`` (safetensors; its head has the
database's class count), ``db:NAME`` (a database model, for simulations), or a precomputed ``.npy``
/ ``.pt`` file of its top-k labels on the inputs (read without unpickling code).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fastfp.cli.loader import check_entry, load_entry, spec_file
from fastfp.cli.main import SubParsers

if TYPE_CHECKING:
    import numpy as np


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("fbi", help="FBI: fingerprinting with benign inputs (database, detect, "
                                   "identify, distances)",
                       description=__doc__.split("\n\n")[0])
    cmds = p.add_subparsers(dest="fbi_command", metavar="SUBCOMMAND")

    b = cmds.add_parser("build",
                        help="query a model list on benign inputs and store their top-k outputs")
    b.add_argument("--spec", required=True,
                   help="JSON or TOML model list (names, families, model sources)")
    b.add_argument("--inputs",
                   help="zoo:N, or a .pt / .npy tensor file (default: the spec's 'inputs')")
    b.add_argument("--labels", help="ground-truth classes (.pt / .npy); default: majority vote")
    b.add_argument("--k", type=int, default=3, help="top-k kept per output (default 3)")
    b.add_argument("--out", required=True,
                   help="database file (.safetensors); an existing one is resumed")
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
    b.set_defaults(func=run_build)

    for name, helptext in (("detect", "is the black box in FAMILY?"),
                           ("identify", "which family is the black box?")):
        d = cmds.add_parser(name, help=helptext)
        d.add_argument("--db", required=True, help="database file")
        if name == "detect":
            d.add_argument("--family", required=True, help="hypothesis family")
        d.add_argument("--blackbox", required=True,
                       help="an ONNX file, zoo:NAME, arch:NAME[:WEIGHTS.safetensors], db:NAME, "
                            "or a .npy/.pt file of top-k labels")
        d.add_argument("--inputs", help="the database's inputs (needed to query a model black box)")
        d.add_argument("--mode", choices=("open", "walled"), default="open",
                       help="open world (statistical, default) or walled garden (greedy, A = B)")
        d.add_argument("--L", type=int, default=100, help="queries (open world; default 100)")
        d.add_argument("--selection", default="30/70" if name == "detect" else "entropy",
                       help="input selection: all, 50/50, 30/70, entropy")
        d.add_argument("--delegates", default="close",
                       help="close, median, far, or a comma list (compound)")
        d.add_argument("--fpr", type=float, default=0.05,
                       help="target false-positive rate (default 0.05)")
        d.add_argument("--trials", type=int, default=20, help="random draws used to set tau")
        d.add_argument("--max-queries", type=int, default=None, help="walled garden: query budget")
        d.add_argument("--seed", type=int, default=0)
        d.add_argument("--batch-size", type=int, default=256)
        d.add_argument("--json", metavar="PATH", help="also write a JSON report")
        _add_trust_code(d)
        d.set_defaults(func=run_detect if name == "detect" else run_identify)

    m = cmds.add_parser("distances",
                        help="pairwise Rajski distances of the database's models (+ PNG figures)")
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

    law = cmds.add_parser("law",
                          help="fit E(L) ~ a E|F| nF / k + beta(k) with greedy identification")
    law.add_argument("--db", required=True)
    law.add_argument("--k", type=int, nargs="+", default=None,
                     help="k values (default: 1 .. database k)")
    law.add_argument("--trials", type=int, default=20)
    law.add_argument("--seed", type=int, default=0)
    law.add_argument("--json", metavar="PATH")
    law.set_defaults(func=run_law)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_trust_code(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-code", action="store_true",
                   help="allow model files that run code when loaded (pickle, TorchScript, .pt2): "
                        "only for files you trust; prints a warning")


# --- loading -----------------------------------------------------------------------------------

def _user_error(msg):
    from fastfp.cli.main import UserError

    return UserError(msg)


def _load_tensor(path: str):
    import numpy as np
    import torch

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {path!r}")
    if p.suffix == ".npy":
        return torch.from_numpy(np.load(p))
    if p.suffix == ".npz":
        with np.load(p) as z:
            return torch.from_numpy(z[z.files[0]])
    obj = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(obj, torch.Tensor):
        raise _user_error(f"{path}: expected a tensor file, found {type(obj).__name__}")
    return obj


def _inputs(spec_value, labels_path):
    """(inputs, labels or None) from zoo:N or a tensor file."""
    if spec_value is None:
        raise _user_error("inputs: give --inputs (zoo:N or a tensor file) or 'inputs' in the spec")
    if str(spec_value).startswith("zoo:"):
        from fastfp import zoo

        count = str(spec_value)[4:]
        if not count.isdigit():
            raise _user_error(f"inputs: expected zoo:N with N a number, got {spec_value!r}")
        x, y = zoo.benign_inputs(int(count))
        return x, (y.numpy() if labels_path is None else _load_tensor(labels_path).numpy())
    x = _load_tensor(spec_value).float()
    return x, None if labels_path is None else _load_tensor(labels_path).numpy()


def _read_spec(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such spec file: {path!r}")
    text = p.read_text()
    if p.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise _user_error(f"{path}: TOML specs need Python 3.11+; write the model list as "
                              "JSON") from None
        spec = tomllib.loads(text)
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _user_error(f"{path}: not valid JSON ({exc})") from exc
    models = spec.get("models")
    if not isinstance(models, list) or not models:
        raise _user_error(f"{path}: expected a non-empty 'models' list")
    for e in models:
        if not isinstance(e, dict) or "name" not in e or "family" not in e:
            raise _user_error(f"{path}: every model needs a 'name' and a 'family', got {e!r}")
    return spec


def _spec_path(value, base: Path, allow_absolute: bool, what: str):
    """A file named in the spec lies in its folder, like the spec's model files (not in the cwd)."""
    if value is None or str(value).startswith("zoo:"):
        return value
    return str(spec_file(str(value), base, allow_absolute=allow_absolute, what=what))


class _LazyModels:
    """name -> model, loaded only when the database needs it (resumed builds skip finished ones)."""

    def __init__(self, entries, base, **load):
        self.entries, self.base, self.load = entries, base, load

    def __iter__(self):
        for e in self.entries:
            yield str(e["name"]), _Deferred(e, self.base, self.load)


class _Deferred:
    def __init__(self, entry, base, load):
        self.entry, self.base, self.load, self.model = entry, base, load, None

    def _get(self):
        if self.model is None:
            import torch

            with torch.enable_grad():  # a zoo model may be trained now, even if asked under no_grad
                self.model = load_entry(self.entry, self.base, **self.load).eval()
        return self.model

    def __call__(self, x):
        return self._get()(x)

    def to(self, device):
        self._get().to(device)
        return self

    def eval(self):
        self._get()  # load (or train) before the no_grad queries start
        return self

    def release(self):
        self.model = None  # the database has this model's outputs; a rerun loads it again


def _report(args, data: dict) -> None:
    if getattr(args, "json", None):
        from fastfp.store import write_json

        write_json(args.json, data)


# --- sub-commands ------------------------------------------------------------------------------

def run_build(args: argparse.Namespace) -> int:
    from fastfp import fbi

    spec = _read_spec(args.spec)
    base = Path(args.spec).resolve().parent
    absolute = args.allow_absolute_paths
    x, labels = _inputs(args.inputs or _spec_path(spec.get("inputs"), base, absolute, "inputs"),
                        args.labels or _spec_path(spec.get("labels"), base, absolute, "labels"))
    entries = spec["models"]
    for e in entries:  # every spec file is checked before any model is loaded
        check_entry(e, base, trust_code=args.trust_code, allow_absolute=absolute)
    families = {str(e["name"]): str(e["family"]) for e in entries}
    models = list(_LazyModels(entries, base, trust_code=args.trust_code,
                              allow_absolute=absolute))
    from fastfp import distributed as dd

    ctx = dd.init()
    if ctx.distributed or args.shard_dir:
        device = args.device or (str(dd.device_for(ctx)) if ctx.distributed else None)
        db = fbi.build_sharded(models, x, k=args.k, families=families, labels=labels,
                               batch_size=args.batch_size, device=device, path=args.out, ctx=ctx,
                               shard_dir=args.shard_dir or f"{args.out}.shards", progress=True)
        if db is None:  # not rank 0: rank 0 merges and reports
            return 0
    else:
        db = fbi.Database.build(models, x, k=args.k, families=families, labels=labels,
                                batch_size=args.batch_size, device=args.device, path=args.out,
                                progress=True, checkpoint_s=args.checkpoint_s)
    print(f"{db!r} -> {args.out}")
    _report(args, {"database": args.out, "models": db.names, "families": db.families, "k": db.k,
                   "num_inputs": db.num_inputs, "num_classes": db.num_classes})
    return 0


def _blackbox_outputs(args, db) -> np.ndarray:
    """Top-k labels (N, k) of the black box on the database's inputs."""
    import torch

    from fastfp import fbi

    bb = args.blackbox
    if bb.startswith("db:"):
        return db.outputs(bb[3:])
    p = Path(bb)
    if p.suffix in (".npy", ".npz") or (p.suffix == ".pt" and _is_tensor_file(p)):
        out = _load_tensor(bb).numpy()
        out = out[:, None] if out.ndim == 1 else out
        if out.shape[0] != db.num_inputs:
            raise _user_error(f"blackbox: {bb} holds {out.shape[0]} outputs, the database has "
                              f"{db.num_inputs} inputs")
        if out.shape[1] < db.k:
            raise _user_error(f"blackbox: {bb} holds top-{out.shape[1]} outputs, the database was "
                              f"built with k = {db.k}")
        return out
    if bb.startswith("zoo:"):
        entry = {"zoo": bb[4:]}
    elif bb.startswith("arch:"):
        name, _, weights = bb[5:].partition(":")
        entry = {"arch": name, **({"weights": weights} if weights else {})}
    else:
        entry = {"path": bb}
    model = load_entry(entry, Path.cwd(), what="--blackbox", trust_code=args.trust_code,
                       allow_absolute=True, num_classes=db.num_classes).eval()
    x, _ = _inputs(args.inputs, None)
    if db.digest is not None and fbi.database.inputs_digest(x) != db.digest:
        raise _user_error("inputs: differ from the inputs the database was built on")
    with torch.no_grad():
        return fbi.query_topk(model, x, db.k, batch_size=args.batch_size, progress=True,
                              desc="black box")


def _is_tensor_file(p: Path) -> bool:
    import torch

    try:
        return isinstance(torch.load(p, map_location="cpu", weights_only=True), torch.Tensor)
    except Exception:
        return False


def _open_world(args, db):
    from fastfp import fbi

    delegates = tuple(d.strip() for d in args.delegates.split(",") if d.strip())
    sel = args.selection
    kwargs = {"selection": sel} if args.fbi_command == "detect" else {"identify_selection": sel}
    return fbi.OpenWorld(L=args.L, delegates=delegates, fpr=args.fpr, trials=args.trials,
                         seed=args.seed,
                         **kwargs).fit(db, progress=True)


def run_detect(args: argparse.Namespace) -> int:
    import numpy as np

    from fastfp import fbi

    db = fbi.Database.load(args.db)
    db.members(args.family)  # unknown family -> clear error before any work
    out = _blackbox_outputs(args, db)
    if args.mode == "walled":
        r = fbi.greedy_detect(db.topk, np.asarray(db.families) == args.family, out,
                              max_queries=args.max_queries,
                              seed=args.seed)
        print(f"walled garden detection of {args.family!r}: {r.decision} after L = {r.L} queries "
              f"{r.queries}")
        _report(args, {"mode": "walled", "family": args.family, "decision": r.decision, "L": r.L,
                       "queries": r.queries})
        return 0
    ow = _open_world(args, db)
    r = ow.detect(out, args.family, seed=args.seed)
    verdict = "positive" if r.positive else "negative"
    print(f"open-world detection of {args.family!r}: {verdict} (D = {r.distance:.4f}, "
          f"tau = {r.tau:.4f}, L = {len(r.queries)}, FPR target {args.fpr})")
    _report(args, {"mode": "open", "family": args.family, "positive": bool(r.positive),
                   "distance": r.distance, "tau": r.tau, "L": len(r.queries),
                   "queries": r.queries.tolist(), "fit": ow.report()})
    return 0


def run_identify(args: argparse.Namespace) -> int:
    from fastfp import fbi

    db = fbi.Database.load(args.db)
    out = _blackbox_outputs(args, db)
    if args.mode == "walled":
        r = fbi.greedy_identify(db.topk, db.families, out, max_queries=args.max_queries,
                                seed=args.seed)
        print(f"walled garden identification: {r.family if r.family is not None else '-'} "
              f"({r.status}) "
              f"after L = {r.L} queries {r.queries}")
        _report(args, {"mode": "walled", "family": r.family, "status": r.status, "L": r.L,
                       "queries": r.queries})
        return 0
    ow = _open_world(args, db)
    r = ow.identify(out, seed=args.seed)
    print(f"open-world identification: {r.family if r.family is not None else '-'} ({r.status}; "
          f"tau = {r.tau:.4f}, L = {len(r.queries)})")
    for f, d in sorted(r.distances.items(), key=lambda kv: kv[1]):
        print(f"  {f:<24} D = {d:.4f}")
    _report(args, {"mode": "open", "family": r.family, "status": r.status,
                   "distances": r.distances, "tau": r.tau, "L": len(r.queries),
                   "queries": r.queries.tolist(), "fit": ow.report()})
    return 0


def run_distances(args: argparse.Namespace) -> int:
    import numpy as np

    from fastfp import fbi

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

        tiled = dd.pairwise_rajski_tiled(torch.from_numpy(np.ascontiguousarray(sym)), ctx=ctx,
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
