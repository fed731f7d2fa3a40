"""Files: atomic writes, reads that refuse what is not a regular file, reproducible safetensors.

A write goes to a temporary file beside the target, is fsync'ed, renamed into place, and the folder
is fsync'ed, so an interrupted save leaves either the old file or the new one, never half of one.
A write never replaces anything but a regular file (a symlink, FIFO or device node at the target is
an error), and temporaries left behind by killed saves of the same target are removed. A read
refuses non-regular files (``/dev/zero`` would be read until memory runs out, a FIFO would hang).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _validate as V

_TMP_TAG = "fastfp-tmp"
_CLEANED: set[tuple[str, str]] = set()  # (folder, file name) whose stale temporaries are gone


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device node"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def check_target(path: str | os.PathLike[str], name: str = "path") -> Path:
    """``path`` as a Path, if an atomic save can put a file there: its folder exists and is
    writable, and ``path`` is absent or a regular file. Call it before the work that fills it."""
    path = V.path(name, path)
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{name}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{name}: folder {str(parent)!r} is not writable")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{name}: {str(path)!r} is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{name}: {str(path)!r} is a {_kind(mode)}, not a regular file; "
                         "refusing to replace it")
    return path


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _clean_stale(parent: Path, target: str) -> None:
    """Remove temporaries of ``target`` left by killed saves: this machine's, whose process is
    gone. Once per folder and target per process (a scan per save would be quadratic)."""
    if os.name != "posix" or (str(parent), target) in _CLEANED:
        return
    _CLEANED.add((str(parent), target))
    own = re.compile(rf"\.{re.escape(target)}\.{_TMP_TAG}-{re.escape(_host())}-(\d+)-")
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            m = own.match(entry.name)
            if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; other systems cannot open a folder)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync a folder: the rename still happened
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None,
                name: str = "path") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    ``suffix`` keeps writers that look at the extension (e.g. numpy's ``.npz``) happy; ``name``
    is the argument named in errors.
    """
    path = check_target(path, name)
    parent = path.parent
    _clean_stale(parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_TMP_TAG}-{_host()}-{os.getpid()}-",
                               suffix=suffix or ".tmp", dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the user's usual mode
        check_target(path, name)  # again: something else may have appeared there meanwhile
        os.replace(tmp, path)
        _fsync_dir(parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    # Reading the umask means setting it: do it once, not on every write.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes, *, name: str = "path") -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, name=name) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str, *, name: str = "path") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"), name=name)


def write_json(path: str | os.PathLike[str], obj: Any, *, name: str = "path",
               sealed: bool = False) -> None:
    """Write ``obj`` as indented JSON with sorted keys (same content, same bytes). ``sealed``:
    the object (a dict) also gets ``"sha256"``, the digest of the rest, which :func:`read_json`
    checks (for data read back, such as an answer cache)."""
    if sealed:
        if not isinstance(obj, dict):
            raise TypeError(f"obj: a sealed JSON file holds a dict, got {type(obj).__name__}")
        obj = {**obj, "sha256": _json_seal(obj)}
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", name=name)


def _canonical_json(obj: Any) -> bytes:
    """The bytes a checksum covers: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def _json_seal(obj: dict) -> str:
    return hashlib.sha256(_canonical_json({k: v for k, v in obj.items() if k != "sha256"})
                          ).hexdigest()


def read_json(path: str | os.PathLike[str], *, name: str = "path") -> Any:
    """The JSON content of the regular file ``path``; a dict carrying ``"sha256"`` (written with
    ``sealed=True``) must match it. ValueError naming ``name`` otherwise."""
    data = read_bytes(path, name=name)
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: {str(path)!r} is not a JSON file ({exc})") from None
    if isinstance(obj, dict) and "sha256" in obj and obj["sha256"] != _json_seal(obj):
        raise ValueError(f"{name}: {str(path)!r}: checksum mismatch (corrupt or edited file)")
    return obj


def read_bytes(path: str | os.PathLike[str], *, name: str = "path") -> bytes:
    """The content of the regular file ``path``; anything else raises an error naming ``name``."""
    fd = _open_regular(path, name)
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def _open_regular(path: str | os.PathLike[str], name: str) -> int:
    """A read-only descriptor of the regular file ``path`` (errors name ``name``)."""
    path = V.path(name, path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: opening a FIFO without a writer returns at once
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{name}: {str(path)!r} is a folder, expected a file") from None
    except PermissionError:
        raise PermissionError(f"{name}: {str(path)!r} is not readable (permission denied)") \
            from None
    mode = os.fstat(fd).st_mode  # of what was opened, not of what the name says now
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{name}: {str(path)!r} is a folder, expected a file")
        raise ValueError(f"{name}: {str(path)!r} is a {_kind(mode)}, not a regular file")
    return fd


# ------------------------------------------------------------------------------ journals
# A journal is JSON lines, each "<sha256 of the JSON> <JSON>\n": appending costs only the new
# records, and checking a line is one hash of its bytes.
def _record_line(record: dict) -> bytes:
    payload = _canonical_json(record)
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
    fd = _open_regular(path, name)
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


# ------------------------------------------------------------------------------ safetensors
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
           torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
for _bits in (16, 32, 64):  # unsigned wide integers exist in torch >= 2.3 only
    if hasattr(torch, f"uint{_bits}"):
        _DTYPES[getattr(torch, f"uint{_bits}")] = f"U{_bits}"


def safetensors_bytes(tensors: Mapping[str, torch.Tensor | np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file whose bytes depend only on the content: sorted header keys (the
    ``safetensors`` package orders the metadata differently from one process to the next).

    Tensors are laid out by element size, largest first, then by name, so every tensor's data is
    aligned to its element size.
    """
    items = {}
    for key, value in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) \
            else value
        if not isinstance(t, torch.Tensor) or t.dtype not in _DTYPES:
            raise TypeError(f"tensors[{key!r}]: expected a tensor of one of "
                            f"{', '.join(map(str, _DTYPES))}, got {getattr(t, 'dtype', type(t))}")
        items[key] = t.detach().cpu().contiguous()
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for key in sorted(items, key=lambda k: (-items[k].element_size(), k)):
        t = items[key]
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[key] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    return len(blob).to_bytes(8, "little") + blob + b"".join(chunks)


def _seal(tensors: Mapping[str, torch.Tensor | np.ndarray], metadata: Mapping[str, str]) -> str:
    meta = {k: v for k, v in metadata.items() if k != "sha256"}
    return hashlib.sha256(safetensors_bytes(tensors, meta)).hexdigest()


def sealed_safetensors(tensors: Mapping[str, torch.Tensor | np.ndarray],
                       metadata: Mapping[str, str]) -> bytes:
    """:func:`safetensors_bytes` whose metadata holds ``sha256``: the digest of the same file
    written without it, so :func:`seal_matches` sees a changed byte in the header or data."""
    return safetensors_bytes(tensors, {**metadata, "sha256": _seal(tensors, metadata)})


def seal_matches(tensors: Mapping[str, torch.Tensor | np.ndarray],
                 metadata: Mapping[str, str]) -> bool:
    """Whether ``metadata["sha256"]`` is the seal of these tensors and the rest of the metadata."""
    return metadata.get("sha256") == _seal(tensors, metadata)


def read_safetensors(data: bytes, *, name: str = "path"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; ValueError naming ``name`` when it is unreadable
    or its ``sha256`` (from :func:`sealed_safetensors`; files without one pass) does not match."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except Exception as exc:  # safetensors raises its own error type
        raise ValueError(f"{name}: unreadable safetensors file ({exc})") from None
    if "sha256" in meta and not seal_matches(tensors, meta):
        raise ValueError(f"{name}: checksum mismatch (corrupt file)")
    meta.pop("sha256", None)
    return tensors, meta


# ------------------------------------------------------------------------------ locks
class LockTimeout(TimeoutError):
    """Another process holds the lock of a file (its pid and host are in the message)."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
        return f"pid {info.get('pid')} on host {info.get('host')!r}"
    except (OSError, ValueError):
        return "an unknown process"


_HELD: set[str] = set()  # lock files this process holds


@contextlib.contextmanager
def lock(path: str | os.PathLike[str], *, wait: float | None = 0.0,
         name: str = "path") -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``PATH.lock`` beside ``path`` while the block runs.

    Two writers of one file (e.g. two database builds) then never overwrite each other's work: the
    second waits up to ``wait`` seconds (None: forever) and then raises :class:`LockTimeout`
    naming the holder's pid and host. The lock file stays (removing it could race with a new
    holder); the kernel drops the lock when its holder exits, even when killed. It is re-entrant
    within a process (a locked build saves under it): it keeps processes apart, not threads.
    """
    import fcntl

    path = V.path(name, path)
    if wait is not None:
        wait = V.real("wait", wait, lo=0.0)
    lock_path = path.with_name(path.name + ".lock")
    key = str(lock_path.resolve())
    if key in _HELD:  # this process holds it already (a save inside a locked build)
        yield path
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{name}: {str(path)!r} is locked by {_holder(lock_path)} "
                        f"(lock file {str(lock_path)!r}); waited {wait:g} s") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        _HELD.add(key)
        try:
            yield path
        finally:
            _HELD.discard(key)
            os.ftruncate(fd, 0)  # the holder is gone: no stale pid in the file
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
