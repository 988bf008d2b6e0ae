"""hllm_creator.io: atomic_dir / atomic_path are crash-safe.

- a writer process killed with SIGKILL at random moments always leaves the target whole: the old
  or the new output, every file matching the manifest written with it, never a mix, never missing;
- a reader polling the target while another process rewrites it never finds it missing;
- files and folders are fsynced; a failed swap keeps the new output (and the old one in place);
- the fallback (no renameat2) keeps the old output until the new one is in place and a crash
  between its two renames is recovered by the next write.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from hllm_creator import io

REPO = Path(__file__).resolve().parents[2]

# The writer: rewrites TARGET over and over, each generation 12 files of 256 KiB + a manifest of
# their sha256 (written last); prints the generation number after each finished swap.
WRITER = textwrap.dedent("""
    import hashlib, json, os, sys
    from hllm_creator.io import atomic_dir
    target, start = sys.argv[1], int(sys.argv[2])
    gen = start
    while True:
        with atomic_dir(target) as tmp:
            man = {}
            for j in range(12):
                data = (f"{gen}:{j}:".encode() * 40000)[: 256 * 1024]
                with open(os.path.join(tmp, f"part{j}.bin"), "wb") as f:
                    f.write(data)
                man[f"part{j}.bin"] = hashlib.sha256(data).hexdigest()
            with open(os.path.join(tmp, "MANIFEST.json"), "w") as f:
                json.dump({"gen": gen, "files": man}, f)
        print(gen, flush=True)
        gen += 1
""")


# A light writer (one tiny file per generation): many swaps a second, so a window would be hit.
LIGHT_WRITER = textwrap.dedent("""
    import os, sys
    from hllm_creator.io import atomic_dir
    target, i = sys.argv[1], 0
    while True:
        with atomic_dir(target) as tmp:
            with open(os.path.join(tmp, "MANIFEST.json"), "w") as f:
                f.write(str(i))
        i += 1
        if i == 1:
            print(i, flush=True)
""")


def _env() -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "model_code"), str(REPO), env.get("PYTHONPATH", "")])
    return env


def check_whole(target: Path) -> int:
    """The target exists and is one whole generation; returns its number."""
    assert target.is_dir(), f"{target} is missing"
    man = json.loads((target / "MANIFEST.json").read_text())
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted([*man["files"], "MANIFEST.json"]), f"{target}: files {names} vs manifest"
    for name, digest in man["files"].items():
        data = (target / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{target}/{name} is not generation {man['gen']}"
        assert data.startswith(f"{man['gen']}:".encode())
    return man["gen"]


def test_sigkill_mid_write_leaves_old_or_new_whole(tmp_path):
    target = tmp_path / "out"
    rng = random.Random(0)
    seen_gens = set()
    start = 0
    kills = 0
    for _ in range(12):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(start)], env=_env(),
                             stdout=subprocess.PIPE, text=True)
        try:
            first = p.stdout.readline()  # one whole generation done: the target exists from here on
            assert first.strip(), f"writer died: rc={p.poll()}"
            time.sleep(rng.uniform(0.0, 0.08))  # then kill it somewhere in a later write
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            p.stdout.close()
        kills += 1
        gen = check_whole(target)
        seen_gens.add(gen)
        start = gen + 1000  # the next writer's generations differ from any before
    assert kills == 12 and len(seen_gens) >= 2
    # leftovers of killed writers are hidden temp names, never the target's
    for p in tmp_path.iterdir():
        assert p == target or p.name.startswith(".out."), p


def test_target_never_missing_while_rewritten(tmp_path):
    probe = getattr(io, "_libc_renameat2", None)
    if probe is not None and probe() is None:
        pytest.skip("no renameat2 in this C library: the fallback has a (recovered) window")
    target = tmp_path / "out"
    with io.atomic_dir(target) as tmp:
        (tmp / "MANIFEST.json").write_text("{}")
    p = subprocess.Popen([sys.executable, "-c", LIGHT_WRITER, str(target)], env=_env(), stdout=subprocess.PIPE,
                         text=True)
    try:
        p.stdout.readline()
        misses, looks, t0 = 0, 0, time.time()
        while time.time() - t0 < 1.5:
            looks += 1
            if not (target / "MANIFEST.json").exists():
                misses += 1
    finally:
        p.kill()
        p.wait(10)
        p.stdout.close()
    # (the two-rename replace this superseded was missing in ~3% of looks here)
    assert looks > 1000 and misses == 0, f"target missing in {misses} of {looks} looks"


def test_replace_swaps_in_place_and_cleans_up(tmp_path):
    target = tmp_path / "out"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    inode_parent = os.stat(tmp_path).st_ino
    with io.atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "temp or .old leftovers"
    assert os.stat(tmp_path).st_ino == inode_parent


def test_body_error_keeps_the_old_output_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "out"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_files_and_folders_are_fsynced(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to name fds")
    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "out"
    with io.atomic_dir(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"x")
        (tmp / "y.bin").write_bytes(b"y")
        tmp_name = tmp.name
    names = [Path(s).name for s in synced]
    assert {"x.bin", "y.bin", "sub", tmp_name} <= set(names), names
    assert str(tmp_path) in synced, "the parent folder (the rename) was not fsynced"
    synced.clear()
    io.write_json({"a": 1}, tmp_path / "f.json")
    assert any(Path(s).name.startswith(".f.json.") for s in synced) and str(tmp_path) in synced, synced


def test_failed_swap_keeps_the_new_output_and_the_old_in_place(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")

    def refuse(a, b):
        raise OSError(5, "injected I/O error")

    monkeypatch.setattr(io, "rename_exchange", refuse)
    with pytest.raises(io.SwapError, match="kept at") as ei:
        with io.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "old"
    assert (ei.value.kept / "a.txt").read_text() == "new", "the new output was deleted"


def test_fallback_without_exchange(tmp_path, monkeypatch):
    """No renameat2: old kept until the new is in place; a failed second rename restores the old and
    keeps the new; a crash between the renames (target missing, .out.old present) is recovered."""
    monkeypatch.setattr(io, "rename_exchange", lambda a, b: False)
    target = tmp_path / "out"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v2")
    assert (target / "a.txt").read_text() == "v2" and not (tmp_path / ".out.old").exists()

    calls = {"n": 0}
    real = os.replace

    def fail_second(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "injected: no space left")
        return real(src, dst)

    monkeypatch.setattr(io, "_replace", fail_second)
    with pytest.raises(io.SwapError, match="old output is back") as ei:
        with io.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("v3")
    assert (target / "a.txt").read_text() == "v2"
    assert (ei.value.kept / "a.txt").read_text() == "v3"
    monkeypatch.setattr(io, "_replace", real)

    # a crash between the two renames: the target is gone, the old output at .out.old
    os.rename(target, tmp_path / ".out.old")
    assert io.recover(target) and (target / "a.txt").read_text() == "v2"
    os.rename(target, tmp_path / ".out.old")
    with io.atomic_dir(target) as tmp:  # the next write restores first, then replaces
        (tmp / "a.txt").write_text("v4")
    assert (target / "a.txt").read_text() == "v4" and not (tmp_path / ".out.old").exists()


def test_atomic_path_replaces_whole_and_cleans_up_on_error(tmp_path):
    f = tmp_path / "x.json"
    io.write_json({"v": 1}, f)
    with pytest.raises(ValueError):
        with io.atomic_path(f) as tmp:
            tmp.write_text("{half")
            raise ValueError("stop")
    assert json.loads(f.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def test_outputs_get_the_mode_umask_gives_not_0700(tmp_path, mask):
    """A folder or file written by atomic_dir / atomic_path has the mode mkdir()/open() would give under
    the process's umask (0755/0644 under 022): another user (the image's uid 10001 reading a model
    baked as root, the next pod on a shared volume) can read it. mkdtemp/mkstemp alone give 0700/0600."""
    old = os.umask(mask)
    try:
        with io.atomic_dir(tmp_path / "model") as d:
            (d / "CHECKSUM.json").write_text("{}")
            (d / "sub").mkdir()
            # what transformers' save_pretrained leaves: a temp file (0600) renamed into place
            fd, t = tempfile.mkstemp(dir=d)
            os.close(fd)
            os.replace(t, d / "sub" / "model.safetensors")
            (d / "run.sh").write_text("#!/bin/sh\n")
            (d / "run.sh").chmod(0o700)
        with io.atomic_path(tmp_path / "one.json") as p:
            p.write_text("{}")
        # the same as plain mkdir / open under this umask
        os.mkdir(tmp_path / "ref_dir")
        (tmp_path / "ref_file").write_text("")
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "model") == 0o777 & ~mask == mode(tmp_path / "ref_dir")
    assert mode(tmp_path / "one.json") == 0o666 & ~mask == mode(tmp_path / "ref_file")
    assert mode(tmp_path / "model" / "sub") == 0o777 & ~mask
    assert mode(tmp_path / "model" / "sub" / "model.safetensors") == 0o666 & ~mask
    assert mode(tmp_path / "model" / "run.sh") == 0o777 & ~mask  # executables stay executable
    current = os.umask(0)
    os.umask(current)
    assert io._umask() == current  # read without changing it
