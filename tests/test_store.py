"""Atomic writes: all or nothing, no temporaries left, the user's usual file mode."""

import os
import stat

import pytest

from fastfp import store


def test_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a.json"
    store.write_json(p, {"x": 1})
    store.write_json(p, {"x": 2})
    assert p.read_text().strip().endswith("}") and '"x": 2' in p.read_text()
    assert os.listdir(tmp_path) == ["a.json"]


def test_failed_write_keeps_old_file_and_no_temporaries(tmp_path):
    p = tmp_path / "keep.txt"
    store.write_text(p, "old")
    with pytest.raises(RuntimeError):
        with store.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_mode_follows_umask(tmp_path):
    p = tmp_path / "m.bin"
    store.write_bytes(p, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.write_text(tmp_path / "nope" / "x.txt", "x")


@pytest.fixture
def alarm():
    """Fail instead of hanging: a read of a FIFO without a writer blocks forever."""
    import signal

    def boom(*_):
        raise TimeoutError("blocked on a non-regular file")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


posix = pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks as on POSIX")


@posix
def test_writes_never_replace_a_symlink_fifo_or_device(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("keep")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link, not a regular file"):
        store.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "keep"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO, not a regular file"):
        store.write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # A device node: only checked, never written (as root, a failed check would replace it).
    with pytest.raises(ValueError, match="device node, not a regular file"):
        store.check_target("/dev/null")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        store.write_text(tmp_path, "x")
    assert sorted(os.listdir(tmp_path)) == ["link.txt", "pipe", "real.txt"]  # no temporaries


@posix
def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.write_text(tmp_path / "a.txt", "x")
    assert events == ["fsync file", "rename", "fsync folder"]


@posix
def test_temporaries_of_killed_saves_are_cleaned(tmp_path):
    import signal

    target = tmp_path / "db.bin"
    pid = os.fork()
    if pid == 0:  # a save killed half-way: no finally clause runs
        with store.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert len(os.listdir(tmp_path)) == 1 and not target.exists()  # the killed save's temporary
    other = tmp_path / ".unrelated.tmp"
    other.write_text("not ours")
    store.write_bytes(target, b"whole")
    assert sorted(os.listdir(tmp_path)) == [".unrelated.tmp", "db.bin"]
    assert target.read_bytes() == b"whole"


@posix
def test_reads_refuse_what_is_not_a_regular_file(tmp_path, alarm):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    assert store.read_bytes(p) == b"abc"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO, not a regular file"):
        store.read_bytes(fifo)
    with pytest.raises(ValueError, match="device node, not a regular file"):
        store.read_bytes("/dev/zero", name="weights")
    with pytest.raises(FileNotFoundError, match="weights: .* does not exist"):
        store.read_bytes(tmp_path / "nope", name="weights")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        store.read_bytes(tmp_path)
    for bad in (None, 3, b"a.bin"):
        with pytest.raises(TypeError, match="path: expected a file path"):
            store.read_bytes(bad)


def test_safetensors_bytes_are_reproducible_and_readable():
    import torch
    from safetensors.torch import load

    tensors = {"b": torch.arange(5), "a": torch.rand(2, 3), "h": torch.rand(3).half(),
               "m": torch.tensor([True, False, True])}
    meta = {"z": "1", "a": "2", "m": "3"}
    blob = store.safetensors_bytes(tensors, meta)
    flipped = dict(reversed(tensors.items())), dict(reversed(meta.items()))
    assert all(store.safetensors_bytes(*flipped) == blob for _ in range(3))
    back = load(blob)
    assert set(back) == set(tensors)
    assert all(torch.equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype
               for k in tensors)
    n = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + n].decode()
    assert n % 8 == 0 and header.index('"__metadata__":{"a":"2","m":"3","z":"1"}') >= 0


def test_sealed_safetensors_see_any_changed_byte():
    import torch

    tensors = {"w": torch.arange(8.0)}
    blob = store.sealed_safetensors(tensors, {"recipe": '{"lr": 0.002}'})
    back, meta = store.read_safetensors(blob)
    assert torch.equal(back["w"], tensors["w"]) and meta == {"recipe": '{"lr": 0.002}'}
    at = blob.index(b"0.002") + 4
    for bad in (blob[:-1] + bytes([blob[-1] ^ 1]), blob[:at] + b"3" + blob[at + 1:]):
        with pytest.raises(ValueError, match="cache.st: checksum mismatch"):
            store.read_safetensors(bad, name="cache.st")
    with pytest.raises(ValueError, match="cache.st: unreadable safetensors"):
        store.read_safetensors(blob[:20], name="cache.st")
    unsealed = store.safetensors_bytes(tensors, {"a": "1"})  # files without a checksum pass
    assert store.read_safetensors(unsealed)[1] == {"a": "1"}


def _hold_lock(path, ready, release):
    with store.lock(path):
        ready.set()
        release.wait(30)


@pytest.mark.slow
def test_lock_names_the_holder_and_is_freed_on_exit(tmp_path):
    import multiprocessing as mp

    target = tmp_path / "db.safetensors"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(target, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(store.LockTimeout, match=f"locked by pid {holder.pid}"):
            with store.lock(target, wait=0.2):
                pass
    finally:
        release.set()
        holder.join(30)
    with store.lock(target, wait=5):  # free again once the holder is gone
        with store.lock(target):  # re-entrant within one process
            pass
    assert (tmp_path / "db.safetensors.lock").exists()  # never removed: removal could race


def test_lock_rejects_a_bad_wait(tmp_path):
    with pytest.raises(ValueError, match="wait"):
        with store.lock(tmp_path / "x", wait=-1):
            pass


def test_sealed_json_round_trip_and_tamper(tmp_path):
    p = tmp_path / "data.json"
    store.write_json(p, {"b": [1, 2], "a": "x"}, sealed=True)
    assert store.read_json(p) == {"a": "x", "b": [1, 2], "sha256": store.read_json(p)["sha256"]}
    p.write_text(p.read_text().replace("1,", "3,"))  # a value edited, the seal left as it was
    with pytest.raises(ValueError, match="data: .* checksum mismatch"):
        store.read_json(p, name="data")
    store.write_json(p, [1, 2])  # unsealed files still read (reports, hand-written JSON)
    assert store.read_json(p) == [1, 2]
    with pytest.raises(TypeError, match="obj: a sealed JSON file holds a dict"):
        store.write_json(p, [1, 2], sealed=True)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="data: .* is not a JSON file"):
        store.read_json(p, name="data")


HEADER = {"format": "test-journal/1"}


def test_journal_appends_and_reads_back(tmp_path):
    p = tmp_path / "j.jsonl"
    store.append_records(p, [{"a": 1}, {"a": 2}], header=HEADER)
    store.append_records(p, [{"a": 3}], header=HEADER)
    assert store.read_records(p, header=HEADER) == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert p.read_text().count("\n") == 4  # the header, then one line per record
    with pytest.raises(ValueError, match="is not a journal of"):
        store.read_records(p, header={"format": "other/1"})


def test_journal_torn_line_is_dropped_then_cut(tmp_path):
    p = tmp_path / "j.jsonl"
    store.append_records(p, [{"a": 1}], header=HEADER)
    with open(p, "ab") as fh:
        fh.write(b'{"a":2,"sha')  # a writer killed mid-append
    assert store.read_records(p, header=HEADER) == [{"a": 1}]
    store.append_records(p, [{"a": 3}], header=HEADER)  # cuts the torn line first
    assert store.read_records(p, header=HEADER) == [{"a": 1}, {"a": 3}]


def test_journal_corrupt_line_is_named(tmp_path):
    p = tmp_path / "j.jsonl"
    store.append_records(p, [{"a": 1}, {"a": 2}], header=HEADER)
    lines = p.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"a":2', '"a":7')
    p.write_text("".join(lines))
    with pytest.raises(ValueError, match="line 3: corrupt record"):
        store.read_records(p, header=HEADER)


def test_journal_two_processes_append_without_loss(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "j.jsonl"
    code = ("import sys\nfrom fastfp import store\n"
            "for i in range(60):\n"
            "    store.append_records(sys.argv[1], [{'w': sys.argv[2], 'i': i}],\n"
            "                         header={'format': 'test-journal/1'})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p), w]) for w in "ab"]
    assert [q.wait(timeout=120) for q in procs] == [0, 0]
    got = store.read_records(p, header=HEADER)
    assert sorted((r["w"], r["i"]) for r in got) == [(w, i) for w in "ab" for i in range(60)]


def test_journal_reads_grown_and_replaced_files(tmp_path):
    p = tmp_path / "j.jsonl"
    store.append_records(p, [{"a": 1}], header=HEADER)
    assert store.read_records(p, header=HEADER) == [{"a": 1}]
    store.append_records(p, [{"a": 2}], header=HEADER)  # grown: only the new line is read
    assert store.read_records(p, header=HEADER) == [{"a": 1}, {"a": 2}]
    other = tmp_path / "other.jsonl"
    store.append_records(other, [{"b": 1}], header=HEADER)
    os.replace(other, p)  # another file under the same name: read whole
    assert store.read_records(p, header=HEADER) == [{"b": 1}]
    with open(p, "ab") as fh:
        fh.write(b"0" * 64 + b' {"b":2}\n')  # an appended line with a wrong checksum
    with pytest.raises(ValueError, match="corrupt record"):
        store.read_records(p, header=HEADER)
