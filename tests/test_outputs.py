"""Every command's output folder is safe: ``--overwrite`` replaces only what sdguard wrote, an output
never overlaps an input, one run at a time holds a folder, resumable work survives a failure or
Ctrl-C, and output errors are one sentence (exit 2), never a traceback.

Cheap commands stand in for all of them (they share ``core.io.output_dir``): ``data make-world
--size 500``, ``generate builtin:tiny-random`` with one step, ``erase --method esd-x`` for a
resumable run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdguard.core.io import MARKER

GENERATE = ("generate", "builtin:tiny-random", "a red circle", "--n", 1, "--steps", 1)
ESD = ("erase", "builtin:tiny-random", "--concept", "red circle", "--method", "esd-x", "--iterations", 4,
       "--ddim-steps", 3, "--checkpoint-every", 2, "--lr", 1e-3, "--preview", 0)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _sentence(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    return " ".join(stderr.split())


def _nothing_beside(folder: Path, name: str) -> None:
    """No staging folder, lock or replaced copy of ``name`` is left in ``folder``."""
    assert not [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.")]


def _fail_writes(monkeypatch, module, name: str, error) -> None:
    """Make the atomic writer ``module.name`` raise ``error(path)``."""
    def failing(path, _data):
        raise error(str(path))

    monkeypatch.setattr(module, name, failing)


def _disk_full(path: str) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


def _readonly_works(path: Path) -> bool:
    """Whether permissions bind here (not as root): chmod ``path`` read-only and look."""
    path.chmod(0o555)
    return not os.access(path, os.W_OK)


@pytest.fixture(scope="module")
def made_world(tmp_path_factory):
    """A small world made by the command line (a folder sdguard wrote), once."""
    from sdguard.cli import main

    root = tmp_path_factory.mktemp("made") / "world"
    assert main(["data", "make-world", str(root), "--size", "500"]) == 0
    return root


@pytest.fixture
def world(made_world, tmp_path):
    """A copy of the world of this test's own."""
    return Path(shutil.copytree(made_world, tmp_path / "world", symlinks=True))


# -- 1. --overwrite replaces only a folder sdguard wrote ----------------------------------------------

def test_overwrite_replaces_a_folder_sdguard_wrote(run_cli, world):
    assert json.loads((world / MARKER).read_text()) == {"command": "data make-world", "schema_version": 1}
    code, _, stderr = run_cli(*GENERATE, "--out", world, "--overwrite")
    assert code == 0, stderr
    assert (world / "report.json").is_file() and not (world / "metadata.jsonl").exists()
    assert json.loads((world / MARKER).read_text())["command"] == "generate"
    _nothing_beside(world.parent, "world")


def test_overwrite_accepts_a_report_json_without_marker(run_cli, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.json").write_text(json.dumps({"schema_version": 1, "command": "generate"}))
    code, _, stderr = run_cli(*GENERATE, "--out", old, "--overwrite")
    assert code == 0, stderr
    assert (old / "images.jsonl").is_file()


def test_overwrite_refuses_a_folder_with_other_files(run_cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "report.json").write_text('{"title": "not an sdguard report"}')
    before = _digests(mine)
    code, _, stderr = run_cli(*GENERATE, "--out", mine, "--overwrite")
    assert code == 2
    assert _sentence(stderr) == (f"error: --out '{mine}' holds files sdguard did not write; choose another folder "
                                 "(nothing was deleted).")
    assert _digests(mine) == before
    _nothing_beside(tmp_path, "mine")


def test_overwrite_refuses_the_current_folder(run_cli, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    code, _, stderr = run_cli(*GENERATE, "--out", ".", "--overwrite")
    assert code == 2 and "--out '.' holds files sdguard did not write" in _sentence(stderr)
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_overwrite_refuses_the_home_folder(run_cli, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export X=1")
    monkeypatch.setenv("HOME", str(home))
    code, _, stderr = run_cli(*GENERATE, "--out", "~", "--overwrite")
    assert code == 2 and "--out '~' holds files sdguard did not write" in _sentence(stderr)
    assert [p.name for p in home.iterdir()] == [".bashrc"]


def test_an_empty_current_folder_is_refused(run_cli, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, _, stderr = run_cli(*GENERATE, "--out", ".")
    assert code == 2 and "--out '.' is the current folder" in _sentence(stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"] and not any(here.iterdir())


# -- 2. an output never overlaps an input -------------------------------------------------------------

@pytest.mark.parametrize("where,relation", [("DS", "is"), ("DS/sub", "lies inside"), (".", "contains")])
def test_output_overlapping_the_dataset_is_refused(run_cli, world, where, relation):
    out = world if where == "DS" else world / "sub" if where == "DS/sub" else world.parent
    before = _digests(world.parent)
    code, _, stderr = run_cli("audit", "data", world, "--out", out, "--overwrite")
    assert code == 2
    assert f"--out '{out}' {relation} the input DATASET '{world}'" in _sentence(stderr)
    assert _digests(world.parent) == before


def test_output_inside_the_model_folder_is_refused(run_cli, tmp_path):
    model = tmp_path / "model"  # refused before the model is read
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    before = _digests(model)
    code, _, stderr = run_cli(*GENERATE[:1], model, *GENERATE[2:], "--out", model / "images")
    assert code == 2 and f"lies inside the input MODEL '{model}'" in _sentence(stderr)
    assert _digests(model) == before


# -- 3. resumable work survives; a new run does not silently discard it -------------------------------

@pytest.fixture
def interrupted_esd(run_cli, tmp_path, monkeypatch):
    """An ESD erase stopped by Ctrl-C just after its first checkpoint: (out, stderr)."""
    from sdguard.harden.erasure import esd

    real = esd.save_checkpoint

    def then_ctrl_c(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(esd, "save_checkpoint", then_ctrl_c)
    out = tmp_path / "erased"
    code, _, stderr = run_cli(*ESD, "--out", out)
    monkeypatch.undo()
    assert code == 130, stderr
    return out, stderr


def test_ctrl_c_keeps_resumable_work_and_says_how_to_resume(interrupted_esd):
    out, stderr = interrupted_esd
    staging = out.parent / f".{out.name}.partial"
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    line = _sentence(stderr)
    assert line.startswith(f"interrupted; the work so far is kept in '{staging}'; continue it with: sdguard erase")
    assert line.endswith("--resume.")
    assert (staging / "erasure_checkpoint.json").is_file() and not out.exists()
    assert not (out.parent / f".{out.name}.lock").exists()


def test_a_new_run_refuses_interrupted_work_without_resume(run_cli, interrupted_esd):
    out, _ = interrupted_esd
    staging = out.parent / f".{out.name}.partial"
    before = _digests(staging)
    code, _, stderr = run_cli(*ESD, "--out", out)
    assert code == 2
    assert _sentence(stderr) == (f"error: --out '{out}' has an interrupted run in '{staging}'; pass --resume to "
                                 "continue it or --overwrite to start anew.")
    assert _digests(staging) == before


@pytest.mark.parametrize("flag,resumed_at", [("--resume", 2), ("--overwrite", 0)])
def test_resume_continues_and_overwrite_starts_anew(run_cli, interrupted_esd, flag, resumed_at):
    out, _ = interrupted_esd
    code, _, stderr = run_cli(*ESD, "--out", out, flag)
    assert code == 0, stderr
    assert json.loads((out / "report.json").read_text())["results"]["stats"]["resumed_at"] == resumed_at
    _nothing_beside(out.parent, out.name)


def test_resume_refuses_another_commands_work(run_cli, tmp_path):
    staging = tmp_path / ".o.partial"
    staging.mkdir()
    (staging / MARKER).write_text(json.dumps({"command": "model train-tiny", "schema_version": 1, "resumable": True}))
    (staging / "tiny_checkpoint.json").write_text("{}")
    code, _, stderr = run_cli(*ESD, "--out", tmp_path / "o", "--resume")
    assert code == 2 and "has an interrupted run of `model train-tiny`, not of `erase`" in _sentence(stderr)
    assert (staging / "tiny_checkpoint.json").is_file()


def test_a_late_error_keeps_resumable_work(run_cli, tmp_path, monkeypatch):
    """The disk fills while the erased model is saved, after the training: the checkpoint stays."""
    from sdguard.harden.erasure import delta

    _fail_writes(monkeypatch, delta, "atomic_write_bytes", _disk_full)
    out = tmp_path / "erased"
    code, _, stderr = run_cli(*ESD, "--out", out)
    assert code == 2
    lines = [line for line in stderr.strip().splitlines() if "Writing model shards" not in line]  # diffusers' bar
    assert len(lines) == 2 and "Traceback" not in stderr
    assert lines[0] == f"error: --out '{out}' could not be written: the disk is full (No space left on device)."
    assert "kept in" in lines[1] and lines[1].endswith("--resume.")
    assert (tmp_path / ".erased.partial" / "erasure_checkpoint.json").is_file() and not out.exists()


def test_a_killed_runs_leftovers_do_not_block_a_new_run(run_cli, tmp_path):
    """A non-resumable run killed hard leaves its staging folder and lock file: the next run clears them."""
    out = tmp_path / "w"
    run = "import sys; from sdguard.data import make_world; make_world(sys.argv[1], size=20000)"  # lighter than the CLI
    proc = subprocess.Popen([sys.executable, "-c", run, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / ".w.lock"
    try:
        deadline = time.time() + 60
        started = tmp_path / ".w.partial" / "images"
        while time.time() < deadline and proc.poll() is None and not (started.is_dir() and lock.read_text()):
            time.sleep(0.05)
        assert proc.poll() is None and lock.read_text() == str(proc.pid)
        # 4. one run at a time holds --out
        code, _, stderr = run_cli(*GENERATE, "--out", out)
        assert code == 2
        assert _sentence(stderr) == f"error: --out '{out}' is in use by another sdguard run (pid {proc.pid})."
    finally:
        proc.kill()
        proc.wait()
    assert lock.exists() and (tmp_path / ".w.partial").is_dir() and not out.exists()
    code, _, stderr = run_cli("data", "make-world", out, "--size", 500)
    assert code == 0, stderr
    _nothing_beside(tmp_path, "w")


# -- 5. Ctrl-C ------------------------------------------------------------------------------------------

def test_ctrl_c_exits_130_with_one_line(run_cli, tmp_path, monkeypatch):
    from sdguard.models.adapter import DiffusionModel

    def ctrl_c(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DiffusionModel, "generate", ctrl_c)
    code, _, stderr = run_cli(*GENERATE, "--out", tmp_path / "o")
    assert code == 130
    assert stderr.strip() == "interrupted; no output was written."
    assert list(tmp_path.iterdir()) == []


# -- 6. output errors: one sentence, exit 2 ----------------------------------------------------------

def test_out_under_a_file(run_cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, _, stderr = run_cli(*GENERATE, "--out", tmp_path / "afile" / "sub")
    assert code == 2
    assert _sentence(stderr) == f"error: --out '{tmp_path}/afile/sub' cannot be created: '{tmp_path}/afile' is not a folder."
    assert (tmp_path / "afile").read_text() == "x"


def _deny_writes_under(monkeypatch, folder):
    """Where chmod does not bind (root), the permission check sees ``folder`` as not writable."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        inside = os.path.abspath(path) == str(folder) or os.path.abspath(path).startswith(f"{folder}{os.sep}")
        return False if inside and mode & os.W_OK else real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_unwritable_parent_folder(run_cli, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if not _readonly_works(locked):
        _deny_writes_under(monkeypatch, locked)
    try:
        code, _, stderr = run_cli(*GENERATE, "--out", locked / "a" / "o")
    finally:
        locked.chmod(0o755)
    assert code == 2
    assert _sentence(stderr) == f"error: --out '{locked}/a/o' cannot be created: the folder '{locked}' is not writable."
    assert list(locked.iterdir()) == []


def test_overwrite_of_a_read_only_folder(run_cli, world, monkeypatch):
    before = _digests(world)
    if not _readonly_works(world / "images"):
        _deny_writes_under(monkeypatch, world / "images")
    try:
        code, _, stderr = run_cli(*GENERATE, "--out", world, "--overwrite")
    finally:
        (world / "images").chmod(0o755)
    assert code == 2
    assert _sentence(stderr) == (f"error: --out '{world}' is read-only ('{world}/images' is not writable); --overwrite "
                                 "cannot replace it (nothing was deleted).")
    assert _digests(world) == before
    _nothing_beside(world.parent, "world")


def test_out_that_is_a_symlink(run_cli, world, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(world, target_is_directory=True)
    before = _digests(world)
    code, _, stderr = run_cli(*GENERATE, "--out", link, "--overwrite")
    assert code == 2 and f"--out '{link}' is a symbolic link" in _sentence(stderr)
    assert link.is_symlink() and _digests(world) == before


def test_disk_full_removes_the_staging_folder(run_cli, tmp_path, monkeypatch):
    from sdguard.models import commands

    _fail_writes(monkeypatch, commands, "atomic_write_bytes", _disk_full)
    code, _, stderr = run_cli(*GENERATE, "--out", tmp_path / "o")
    assert code == 2
    assert stderr.strip() == f"error: --out '{tmp_path}/o' could not be written: the disk is full (No space left on device)."
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_that_is_a_file(run_cli, world, tmp_path):
    (tmp_path / "cache").write_text("x")
    code, _, stderr = run_cli("audit", "data", world, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "a")
    assert code == 2
    assert _sentence(stderr) == f"error: --cache-dir '{tmp_path}/cache' is a file, not a folder."
    assert not (tmp_path / "a").exists()


def test_another_os_error_is_one_sentence_naming_the_file(run_cli, tmp_path, monkeypatch):
    from sdguard.models import commands

    _fail_writes(monkeypatch, commands, "atomic_write_text", lambda p: PermissionError(errno.EACCES, "Permission denied", p))
    code, _, stderr = run_cli(*GENERATE, "--out", tmp_path / "o")
    assert code == 2
    staged = tmp_path / ".o.partial" / "images.jsonl"
    assert stderr.strip() == f"error: '{staged}' could not be used: Permission denied (PermissionError)."
    assert list(tmp_path.iterdir()) == []


def test_a_bug_keeps_its_traceback(run_cli, tmp_path, monkeypatch):
    from sdguard.models import commands

    _fail_writes(monkeypatch, commands, "atomic_write_text", lambda _p: RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(*GENERATE, "--out", tmp_path / "o")
    assert list(tmp_path.iterdir()) == []
