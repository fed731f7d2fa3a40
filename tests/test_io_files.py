"""fastfp.io files: atomic writes (all or nothing, no temporaries left, the user's usual file
mode), reads of regular files only, sealed JSON, locks and journals."""

import os
import stat

import pytest

from fastfp import io


def test_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a.json"
    io.write_json(p, {"x": 1})
    io.write_json(p, {"x": 2})
    assert p.read_text().strip().endswith("}") and '"x": 2' in p.read_text()
    assert os.listdir(tmp_path) == ["a.json"]


def test_failed_write_keeps_old_file_and_no_temporaries(tmp_path):
    p = tmp_path / "keep.txt"
    io.write_text(p, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_mode_follows_umask(tmp_path):
    p = tmp_path / "m.bin"
    io.write_bytes(p, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.write_text(tmp_path / "nope" / "x.txt", "x")


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
        io.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "keep"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO, not a regular file"):
        io.write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # A device node: only checked, never written (as root, a failed check would replace it).
    with pytest.raises(ValueError, match="device node, not a regular file"):
        io.check_target("/dev/null")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        io.write_text(tmp_path, "x")
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
    io.write_text(tmp_path / "a.txt", "x")
    assert events == ["fsync file", "rename", "fsync folder"]


@posix
def test_temporaries_of_killed_saves_are_cleaned(tmp_path):
    import signal

    target = tmp_path / "db.bin"
    pid = os.fork()
    if pid == 0:  # a save killed half-way: no finally clause runs
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert len(os.listdir(tmp_path)) == 1 and not target.exists()  # the killed save's temporary
    other = tmp_path / ".unrelated.tmp"
    other.write_text("not ours")
    io.write_bytes(target, b"whole")
    assert sorted(os.listdir(tmp_path)) == [".unrelated.tmp", "db.bin"]
    assert target.read_bytes() == b"whole"


@posix
def test_reads_refuse_what_is_not_a_regular_file(tmp_path, alarm):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    assert io.read_bytes(p) == b"abc"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO, not a regular file"):
        io.read_bytes(fifo)
    with pytest.raises(ValueError, match="device node, not a regular file"):
        io.read_bytes("/dev/zero", name="weights")
    with pytest.raises(FileNotFoundError, match="weights: .* does not exist"):
        io.read_bytes(tmp_path / "nope", name="weights")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        io.read_bytes(tmp_path)
    for bad in (None, 3, b"a.bin"):
        with pytest.raises(TypeError, match="path: expected a file path"):
            io.read_bytes(bad)


def _hold_lock(path, ready, release):
    with io.lock(path):
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
        with pytest.raises(io.LockTimeout, match=f"locked by pid {holder.pid}"):
            with io.lock(target, wait=0.2):
                pass
    finally:
        release.set()
        holder.join(30)
    with io.lock(target, wait=5):  # free again once the holder is gone
        with io.lock(target):  # re-entrant within one process
            pass
    assert (tmp_path / "db.safetensors.lock").exists()  # never removed: removal could race


def test_lock_rejects_a_bad_wait(tmp_path):
    with pytest.raises(ValueError, match="wait"):
        with io.lock(tmp_path / "x", wait=-1):
            pass


def test_sealed_json_round_trip_and_tamper(tmp_path):
    p = tmp_path / "data.json"
    io.write_json(p, {"b": [1, 2], "a": "x"}, sealed=True)
    assert io.read_json(p) == {"a": "x", "b": [1, 2], "sha256": io.read_json(p)["sha256"]}
    p.write_text(p.read_text().replace("1,", "3,"))  # a value edited, the seal left as it was
    with pytest.raises(ValueError, match="data: .* checksum mismatch"):
        io.read_json(p, name="data")
    io.write_json(p, [1, 2])  # unsealed files still read (reports, hand-written JSON)
    assert io.read_json(p) == [1, 2]
    with pytest.raises(TypeError, match="obj: a sealed JSON file holds a dict"):
        io.write_json(p, [1, 2], sealed=True)
    with pytest.raises(ValueError, match="data: .* has no checksum"):  # a seal is required
        io.read_json(p, name="data", sealed=True)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="data: .* is not a JSON file"):
        io.read_json(p, name="data")


HEADER = {"format": "test-journal/1"}


def test_journal_appends_and_reads_back(tmp_path):
    p = tmp_path / "j.jsonl"
    io.append_records(p, [{"a": 1}, {"a": 2}], header=HEADER)
    io.append_records(p, [{"a": 3}], header=HEADER)
    assert io.read_records(p, header=HEADER) == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert p.read_text().count("\n") == 4  # the header, then one line per record
    with pytest.raises(ValueError, match="is not a journal of"):
        io.read_records(p, header={"format": "other/1"})


def test_journal_torn_line_is_dropped_then_cut(tmp_path):
    p = tmp_path / "j.jsonl"
    io.append_records(p, [{"a": 1}], header=HEADER)
    with open(p, "ab") as fh:
        fh.write(b'{"a":2,"sha')  # a writer killed mid-append
    assert io.read_records(p, header=HEADER) == [{"a": 1}]
    io.append_records(p, [{"a": 3}], header=HEADER)  # cuts the torn line first
    assert io.read_records(p, header=HEADER) == [{"a": 1}, {"a": 3}]


def test_journal_corrupt_line_is_named(tmp_path):
    p = tmp_path / "j.jsonl"
    io.append_records(p, [{"a": 1}, {"a": 2}], header=HEADER)
    lines = p.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"a":2', '"a":7')
    p.write_text("".join(lines))
    with pytest.raises(ValueError, match="line 3: corrupt record"):
        io.read_records(p, header=HEADER)


def test_journal_two_processes_append_without_loss(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "j.jsonl"
    code = ("import sys\nfrom fastfp import io\n"
            "for i in range(60):\n"
            "    io.append_records(sys.argv[1], [{'w': sys.argv[2], 'i': i}],\n"
            "                         header={'format': 'test-journal/1'})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p), w]) for w in "ab"]
    assert [q.wait(timeout=120) for q in procs] == [0, 0]
    got = io.read_records(p, header=HEADER)
    assert sorted((r["w"], r["i"]) for r in got) == [(w, i) for w in "ab" for i in range(60)]


def test_journal_reads_grown_and_replaced_files(tmp_path):
    p = tmp_path / "j.jsonl"
    io.append_records(p, [{"a": 1}], header=HEADER)
    assert io.read_records(p, header=HEADER) == [{"a": 1}]
    io.append_records(p, [{"a": 2}], header=HEADER)  # grown: only the new line is read
    assert io.read_records(p, header=HEADER) == [{"a": 1}, {"a": 2}]
    other = tmp_path / "other.jsonl"
    io.append_records(other, [{"b": 1}], header=HEADER)
    os.replace(other, p)  # another file under the same name: read whole
    assert io.read_records(p, header=HEADER) == [{"b": 1}]
    with open(p, "ab") as fh:
        fh.write(b"0" * 64 + b' {"b":2}\n')  # an appended line with a wrong checksum
    with pytest.raises(ValueError, match="corrupt record"):
        io.read_records(p, header=HEADER)
