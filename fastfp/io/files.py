"""Files: atomic writes, bounded reads of regular files only, sealed JSON, checked ``.npy``.

A write goes to a temporary file beside the target, is fsync'ed, renamed into place, and the folder
is fsync'ed, so an interrupted save leaves either the old file or the new one, never half of one.
A write never replaces anything but a regular file (a symlink, FIFO or device node at the target is
an error), and temporaries left behind by killed saves of the same target are removed. A read
refuses non-regular files (``/dev/zero`` would be read until memory runs out, a FIFO would hang)
and caps what it reads before reading it: bytes (:data:`MAX_FILE_BYTES`), JSON nesting
(:data:`MAX_JSON_DEPTH`; ``json`` recurses once per level), ``.npy`` sizes declared in the header
(never more than the file holds).
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastfp import _validate

_TMP_TAG = "fastfp-tmp"
# Reads of files that others may supply are capped before they start.
MAX_FILE_BYTES = 256 * 2 ** 20  # JSON / CSV / TOML text: parsed into Python objects (~10x)
MAX_ARRAY_BYTES = 16 * 2 ** 30  # one .npy array (a tensor file is read into memory once)
MAX_JSON_DEPTH = 64  # nesting of [ and { (fastfp's own files need at most about 5)
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
    path = _validate.path(name, path)
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


def canonical_json(obj: Any) -> bytes:
    """The bytes a checksum covers: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def _json_seal(obj: dict) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in obj.items() if k != "sha256"})
                          ).hexdigest()


def read_json(path: str | os.PathLike[str], *, name: str = "path", sealed: bool = False,
              max_bytes: int = MAX_FILE_BYTES) -> Any:
    """The JSON content of the regular file ``path`` (at most ``max_bytes``, nested at most
    :data:`MAX_JSON_DEPTH` deep); a dict carrying ``"sha256"`` (written with ``sealed=True``)
    must match it, and ``sealed=True`` requires one (a removed seal would otherwise pass as an
    unsealed file). ValueError naming ``name`` otherwise."""
    obj = parse_json(read_bytes(path, name=name, max_bytes=max_bytes), name=name, source=path)
    if sealed and not (isinstance(obj, dict) and "sha256" in obj):
        raise ValueError(f"{name}: {str(path)!r} has no checksum (\"sha256\"), expected a "
                         "sealed JSON file written by fastfp")
    if isinstance(obj, dict) and "sha256" in obj and obj["sha256"] != _json_seal(obj):
        raise ValueError(f"{name}: {str(path)!r}: checksum mismatch (corrupt or edited file)")
    return obj


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting_depth(data: bytes | str) -> int:
    """How deeply ``[`` / ``{`` nest in the JSON (or TOML) text ``data``, brackets inside strings
    not counted: a linear scan, so that a parser that recurses per level is never handed more."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    import numpy as np  # vectorised: a few ms per MB

    codes = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    step = (np.isin(codes, (0x5B, 0x7B)).astype(np.int64)
            - np.isin(codes, (0x5D, 0x7D)).astype(np.int64))
    return int(np.cumsum(step).max(initial=0))


def check_depth(data: bytes | str, *, name: str, source: object = None,
                max_depth: int = MAX_JSON_DEPTH) -> None:
    """ValueError naming ``name`` when ``data`` nests deeper than ``max_depth``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    opening = raw.count(b"[") + raw.count(b"{")
    if opening <= max_depth:  # the common case: too few brackets to nest too deeply
        return
    depth = nesting_depth(data)
    if depth > max_depth:
        where = "" if source is None else f"{str(source)!r}: "
        raise ValueError(f"{name}: {where}nested {depth} levels deep, more than the "
                         f"{max_depth} a fastfp file may have")


def parse_json(data: bytes | str, *, name: str = "json", source: object = None,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of ``data`` after a depth scan (:func:`check_depth`); ValueError naming
    ``name`` (and ``source``, the file) for text that is not JSON or nests too deeply."""
    where = "" if source is None else f"{str(source)!r} "
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: {where}is not a JSON file ({exc.reason})") from None
    check_depth(text, name=name, source=source, max_depth=max_depth)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: {where}is not a JSON file ({exc})") from None
    except RecursionError:  # a scan miss must still not end in a traceback
        raise ValueError(f"{name}: {where}nests too deeply") from None


def read_bytes(path: str | os.PathLike[str], *, name: str = "path",
               max_bytes: int | None = None) -> bytes:
    """The content of the regular file ``path``; anything else raises an error naming ``name``,
    so does a file over ``max_bytes`` (None: no cap), before it is read."""
    fd = open_regular(path, name)
    try:
        if max_bytes is not None:
            check_size(os.fstat(fd).st_size, max_bytes, name=name, source=path)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        if max_bytes is not None:  # a file that grew while it was read
            check_size(len(data), max_bytes, name=name, source=path)
        return data
    finally:
        os.close(fd)


def check_size(size: int, max_bytes: int, *, name: str, source: object) -> None:
    """ValueError naming ``name`` when a file of ``size`` bytes is over ``max_bytes``."""
    if size > max_bytes:
        raise ValueError(f"{name}: {str(source)!r} holds {size} bytes, more than the "
                         f"{_human(max_bytes)} this file may have")


def _human(n: int) -> str:
    if n >= 2 ** 30:
        return f"{n / 2 ** 30:.0f} GiB"
    return f"{n / 2 ** 20:.0f} MiB" if n >= 2 ** 20 else f"{n} bytes"


def read_npy(path: str | os.PathLike[str], *, name: str = "path",
             max_bytes: int = MAX_ARRAY_BYTES) -> Any:
    """The array of the ``.npy`` file ``path`` (a regular file), without pickle. Its header is
    read first: a declared size over ``max_bytes`` or over what the file holds (a header may
    claim terabytes) is refused before any memory is taken. ValueError naming ``name``."""
    fd = open_regular(path, name)
    with os.fdopen(fd, "rb") as fh:
        return npy_from(fh, os.fstat(fh.fileno()).st_size, name=name, source=path,
                        max_bytes=max_bytes)


def npy_from(fh: Any, size: int, *, name: str, source: object = None,
             max_bytes: int = MAX_ARRAY_BYTES) -> Any:
    """The array of the ``.npy`` stream ``fh`` of ``size`` bytes, checked like :func:`read_npy`
    (also for the members of an ``.npz``)."""
    import numpy as np
    from numpy.lib import format as npformat

    at = f"{name}: " if source is None else f"{name}: {str(source)!r}: "
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:  # 3.0 only adds UTF-8 field names of structured arrays: never labels or images
            raise ValueError(f".npy version {version[0]}.{version[1]} is not supported")
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise ValueError(f"{at}not a valid .npy file ({exc})") from None
    if dtype.hasobject:
        raise ValueError(f"{at}not a valid .npy file: it holds Python objects (pickle), "
                         "which fastfp never loads")
    count = 1
    for d in shape:
        count *= int(d)
    declared = count * dtype.itemsize
    if declared > max_bytes:
        raise ValueError(f"{at}declares a {shape} {dtype} array of {declared} bytes, "
                         f"more than the {_human(max_bytes)} fastfp reads")
    if declared > size - fh.tell():
        raise ValueError(f"{at}declares a {shape} {dtype} array of {declared} bytes, "
                         f"but holds {max(size - fh.tell(), 0)} (truncated or forged header)")
    array = np.empty(count, dtype=dtype)
    if declared and fh.readinto(array.view(np.uint8)) != declared:
        raise ValueError(f"{at}truncated")
    return array.reshape(shape, order="F" if fortran else "C")


def open_regular(path: str | os.PathLike[str], name: str) -> int:
    """A read-only descriptor of the regular file ``path`` (errors name ``name``)."""
    path = _validate.path(name, path)
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
