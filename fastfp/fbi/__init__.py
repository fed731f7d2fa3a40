"""FBI: fingerprinting with benign inputs (Maho, Furon, Le Merrer, IEEE TIFS 2023).

Decide whether a black-box classifier belongs to a model family (detection) and which family
(identification) from its top-k outputs on a few benign inputs.

- :mod:`.database`    query known models once on benign inputs; store compact top-k outputs
- :mod:`.sharded`     the same database built across torchrun processes (shards, resume, merge)
- :mod:`.surjection`  S_k: top-k output -> rank of the reference class (0..k)
- :mod:`.information` entropy, mutual information, Rajski distance, all pairs at once
- :mod:`.greedy`      walled garden (A = B): greedy detection / identification
- :mod:`.openworld`   open world (A != B): thresholds, input selection, delegates, abstention
- :mod:`.law`         the fitted E(L) ~ a E|F| nF / k + beta(k) report
- :mod:`.blackbox`    old home of :mod:`fastfp.blackbox` (the suspects to query: Open Inference
                      Protocol services, ONNX files, models, answers files; kept as an alias)
- :mod:`.release`     import the FBI authors' released predictions (one .npy per model)
- :mod:`.protocol`    the paper's protocol: accuracy filter, Tables III-VI
- :mod:`.answers`     benign inputs read from files (forgiving formats); a suspect's answers are
                      read by :mod:`fastfp.answers` (re-exported here)

Array functions take numpy, torch or cupy arrays and return the same kind.
"""

from . import answers, blackbox
from .database import Database, query_topk
from .greedy import (
    DetectionResult,
    IdentificationResult,
    SequentialResult,
    detection_scores,
    encode,
    greedy_detect,
    greedy_identify,
    sequential_identify,
)
from .information import (
    DISTANCES,
    entropy,
    mutual_information,
    pairwise_distance,
    pairwise_rajski,
    rajski_distance,
)
from .law import fit_query_law, query_law_experiment
from .openworld import OpenWorld, label_entropy, select_inputs
from .sharded import build_sharded, pairwise_rajski_tiled
from .surjection import surjection
from .synthetic import paper_database, synthetic_database

__all__ = [
    "answers",
    "blackbox",
    "Database",
    "query_topk",
    "build_sharded",
    "pairwise_rajski_tiled",
    "surjection",
    "entropy",
    "mutual_information",
    "rajski_distance",
    "pairwise_rajski",
    "pairwise_distance",
    "DISTANCES",
    "encode",
    "detection_scores",
    "greedy_detect",
    "greedy_identify",
    "sequential_identify",
    "DetectionResult",
    "IdentificationResult",
    "SequentialResult",
    "OpenWorld",
    "select_inputs",
    "label_entropy",
    "fit_query_law",
    "query_law_experiment",
    "synthetic_database",
    "paper_database",
]
