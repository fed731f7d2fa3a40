"""The sealed files fastfp writes (name, version, what a message calls them), and how to recognise
the layouts fastfp 0.1.0 wrote, which the readers refuse with the command that converts them."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    """One kind of sealed container file: the header's ``format`` and ``version`` it is written
    with, and ``what`` error messages call a file of this kind (with its article)."""

    name: str
    version: str
    what: str

    @property
    def noun(self) -> str:
        """``what`` without its article ("FBI database")."""
        return self.what.split(" ", 1)[1] if self.what.startswith(("a ", "an ")) else self.what


FINGERPRINT = Format("fastfp.fingerprint", "2", "a fastfp fingerprint")
DATABASE = Format("fastfp.fbi.database", "2", "an FBI database")
SHARD = Format("fastfp.shard", "2", "a fastfp shard")
ZOO_MODEL = Format("fastfp.zoo.model", "2", "a zoo cache entry")
FORMATS = (FINGERPRINT, DATABASE, SHARD, ZOO_MODEL)

LEGACY_VERSION = "0.1.0"  # the release whose files the converter reads


class LegacyFileError(ValueError):
    """A file in a layout of fastfp 0.1.0: refused, with the command that converts it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: written by fastfp {LEGACY_VERSION} (format version 1); "
                         f"convert it with `fastfp convert {self.path}`")


def legacy_format(metadata: Mapping[str, str]) -> Format | None:
    """The current :class:`Format` of a file whose safetensors header metadata has a 0.1.0
    layout, else None. The layouts: fingerprints ``format`` fastfp.fingerprint, ``version`` 1;
    databases one ``fastfp`` entry holding JSON of format ``fastfp.fbi.database/1``; shards
    ``settings_hash`` and ``item`` without any ``format``."""
    if metadata.get("format") == FINGERPRINT.name and metadata.get("version") == "1":
        return FINGERPRINT
    if "format" not in metadata and "fastfp" in metadata:
        try:
            inner = json.loads(metadata["fastfp"])
        except ValueError:
            return None
        if isinstance(inner, dict) and inner.get("format") == "fastfp.fbi.database/1":
            return DATABASE
    if "format" not in metadata and "settings_hash" in metadata and "item" in metadata:
        return SHARD
    return None
