"""Append-only journals: JSON lines, each ``<sha256 of the JSON> <JSON>`` and a newline.

Appending costs only the new records, and checking a line is one hash of its bytes. Appends hold
the file's lock; a line torn by a killed writer is cut off before the next append.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .files import canonical_json, check_target, open_regular
from .lock import lock


def _record_line(record: dict) -> bytes:
    payload = canonical_json(record)
    return hashlib.sha256(payload).hexdigest().encode() + b" " + payload + b"\n"


def append_records(path: str | os.PathLike[str], records: Sequence[dict], *, header: dict,
                   name: str = "path") -> None:
    """Append ``records`` to the journal ``path`` under the file's lock, and fsync. A new file
    starts with ``header``; a line torn by a killed writer is cut off first (an append is not
    atomic; the cut restores the last whole record)."""
    path = check_target(path, name)
    with lock(path, wait=60.0, name=name):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line: cut it off
                tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
                size = size - len(tail) + tail.rfind(b"\n") + 1
                os.ftruncate(fd, size)
            data = b"".join(_record_line(r) for r in records)
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, (_record_line(header) if size == 0 else b"") + data)
            os.fsync(fd)
        finally:
            os.close(fd)


# per journal already read: (inode, bytes read, its last line, the records): a journal that only
# grew is read from where the last call stopped (many black boxes sharing one answer cache)
_JOURNALS: dict[str, tuple[int, int, bytes, list[dict]]] = {}


def read_records(path: str | os.PathLike[str], *, header: dict,
                 name: str = "path") -> list[dict]:
    """The records of the journal ``path`` (from :func:`append_records`), in order. Its first
    line must be ``header``; a line whose checksum does not match is an error naming the line;
    a last line without its newline (a killed writer) is left out."""
    key = f"{Path(path).resolve()}\0{json.dumps(header, sort_keys=True)}"
    fd = open_regular(path, name)
    try:
        st = os.fstat(fd)
        held = _JOURNALS.get(key)
        start, records = 0, []
        first: int | None = 1  # the header's line number (None: read by an earlier call)
        if held and held[0] == st.st_ino and held[1] <= st.st_size and \
                os.pread(fd, len(held[2]), held[1] - len(held[2])) == held[2]:  # grown only
            start, records, first = held[1], list(held[3]), None
        data = os.pread(fd, st.st_size - start, start) if st.st_size > start else b""
    finally:
        os.close(fd)
    whole = data.rfind(b"\n") + 1  # bytes up to the last newline: a torn last line is not read
    lines = data[:whole].split(b"\n")[:-1]
    for n, line in enumerate(lines, 1):
        digest, _, payload = line.partition(b" ")
        try:
            rec = json.loads(payload) if hashlib.sha256(payload).hexdigest().encode() == digest \
                else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            rec = None
        if n == first:
            if rec != header:
                raise ValueError(f"{name}: {str(path)!r} is not a journal of {header} (JSON "
                                 "lines written by fastfp)")
            continue
        if not isinstance(rec, dict):
            where = f"line {n}" if first else f"a line after byte {start}"
            raise ValueError(f"{name}: {str(path)!r} {where}: corrupt record (checksum)")
        records.append(rec)
    if lines:
        _JOURNALS[key] = (st.st_ino, start + whole, lines[-1] + b"\n", records)
    return list(records)
