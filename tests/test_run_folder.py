"""One training process per run folder, and no leftovers of interrupted saves.

The lock is held by a real second process, which is then killed with SIGKILL:
the operating system must release the lock with it.
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import PixelCNNError
from engine.run_folder import hold_run_folder
from engine.train import main as train_main

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys, time
from engine.run_folder import hold_run_folder

with hold_run_folder(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    """A run folder locked by a live child process; yields (folder, process)."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield out, holder
    finally:
        holder.kill()
        holder.wait()


def test_second_training_in_a_held_folder_is_one_error_line(
    held_by_another_process, mnist_path, capsys
):
    out, _ = held_by_another_process

    # a run small enough that, were the lock not there, it would finish and fail the test
    code = train_main([
        "--data", str(mnist_path), "--out", str(out), "--epochs", "1", "--batch-size", "16",
        "--subset", "32", "--validation-size", "32", "--channels", "4", "--blocks", "1",
        "--threads", "1", "--no-progress",
    ])  # fmt: skip

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: another training process is using")
    assert err.count("\n") == 1
    assert not (out / "last.pt").exists() and not (out / "metrics.jsonl").exists()


def test_a_killed_holder_leaves_no_stale_lock(held_by_another_process):
    out, holder = held_by_another_process
    with pytest.raises(PixelCNNError, match="another training process"):
        with hold_run_folder(out):
            pass

    holder.kill()
    holder.wait()

    deadline = time.monotonic() + 10
    while True:
        try:
            with hold_run_folder(out) as held:
                assert held == out
            break
        except PixelCNNError:
            assert time.monotonic() < deadline, "the lock outlived the killed process"
            time.sleep(0.05)


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    with hold_run_folder(tmp_path / "run"):
        pass
    with hold_run_folder(tmp_path / "run"):
        pass


def test_leftovers_of_interrupted_saves_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    kept = ["last.pt", "best.pt", "metrics.jsonl", "notes.tmp", "model.onnx.x1y2.tmp"]
    for name in kept:
        (out / name).write_bytes(b"keep")
    for name in ["last.pt.k3j_9a.tmp", "best.pt.0q1w2e.tmp"]:
        (out / name).write_bytes(b"torn")

    with hold_run_folder(out):
        left = sorted(p.name for p in out.iterdir() if p.name != ".lock")

    assert left == sorted(kept)


def test_resume_into_a_missing_folder_makes_no_folder(tmp_path, capsys):
    missing = tmp_path / "typo"

    code = train_main(["--out", str(missing), "--resume"])

    assert code == 2
    assert "no run to resume" in capsys.readouterr().err
    assert not missing.exists()
