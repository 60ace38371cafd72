"""Faults during training: Ctrl-C, SIGTERM, kill -9 mid-save and a full disk.

Real `python -m engine.train` processes are signalled while they train, and a
real process saving checkpoints in a loop is killed with SIGKILL; afterwards
the run folder must hold a checkpoint that loads and resumes.
"""

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import checkpoint, train
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.errors import PixelCNNError
from engine.model import ModelConfig

# signals, fork and process groups as POSIX has them
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork")

ROOT = Path(__file__).resolve().parent.parent

# 160 digits in batches of 8: 20 steps an epoch, 60 in all
SMALL_RUN = {
    "epochs": 3,
    "batch_size": 8,
    "subset": 160,
    "validation_size": 100,
    "schedule": "constant",
    "warmup_steps": 0,
    "threads": 1,
}
TINY = {"channels": 8, "blocks": 2}
TOTAL_STEPS = 60


def cli_options(values: dict) -> list[str]:
    return [
        item
        for key, value in values.items()
        for item in (f"--{key.replace('_', '-')}", str(value))
    ]


def start_training(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "engine.train", "--data", str(data), "--out", str(out)]
    command += cli_options(SMALL_RUN) + cli_options(TINY) + ["--no-progress", *extra]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, timeout: float = 90.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def finish(process: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def resume(data: Path, out: Path, capsys) -> tuple[int, str]:
    code = train.main(["--data", str(data), "--out", str(out), "--resume", "--no-progress"])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def uninterrupted(small_mnist, tmp_path_factory) -> dict:
    """The weights the small run ends with when nothing stops it."""
    out = tmp_path_factory.mktemp("uninterrupted")
    config = train.TrainConfig(data=str(small_mnist), out=str(out), **SMALL_RUN)
    train.Trainer(config, ModelConfig(**TINY)).run()
    return load_checkpoint(out / "last.pt")


@pytest.fixture(autouse=True)
def no_stop_left_behind():
    # the stop request is process-wide: one test's signal must not stop the next run
    yield
    train.stop_requested.clear()


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_training_leaves_a_run_that_resumes_to_the_same_weights(
    small_mnist, tmp_path, uninterrupted, stop, capsys
):
    out = tmp_path / "run"
    process = start_training(small_mnist, out, "--save-minutes", "0.0005")

    # last.pt appears after the first timed save, so training steps are under way
    wait_for(lambda: (out / "last.pt").exists() or process.poll() is not None, what="last.pt")
    process.send_signal(stop)
    code, _, err = finish(process)

    assert code == 130, err
    assert "--resume" in err and "Traceback" not in err
    stopped = load_checkpoint(out / "last.pt")
    assert 0 < stopped["step"] < TOTAL_STEPS

    code, err = resume(small_mnist, out, capsys)

    assert code == 0, err
    final = load_checkpoint(out / "last.pt")
    assert final["step"] == TOTAL_STEPS
    for name, weight in uninterrupted["model"].items():
        torch.testing.assert_close(final["model"][name], weight, rtol=0, atol=0, msg=name)
    epochs = [
        json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3]


def test_signal_right_after_an_optimizer_step_saves_a_consistent_state(
    small_mnist, tmp_path, monkeypatch, capsys
):
    # the riskiest moment: weights updated, step counter not yet; last.pt must
    # hold the step counter, optimizer and schedule of the same step
    original = train.Trainer.train_step

    def step_then_signal(self, batch):
        loss = original(self, batch)
        if self.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(train.Trainer, "train_step", step_then_signal)
    out = tmp_path / "run"
    argv = ["--data", str(small_mnist), "--out", str(out), "--no-progress"]

    code = train.main(argv + cli_options(SMALL_RUN) + cli_options(TINY))

    assert code == 130, capsys.readouterr().err
    state = load_checkpoint(out / "last.pt")
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert state["step"] == 5
    assert adam_steps == {5}
    assert state["scheduler"]["last_epoch"] == 5
    assert state["batch_in_epoch"] == 5


@pytest.mark.slow
def test_ctrl_c_delivered_twice_at_once_still_saves(small_mnist, tmp_path):
    # a Ctrl-C under torchrun reaches each worker twice: from the terminal and
    # forwarded by torchrun a moment later; that is one request, not two
    out = tmp_path / "run"
    process = start_training(small_mnist, out, "--save-minutes", "10", "--epochs", "10")
    wait_for(lambda: (out / "last.pt").exists() or process.poll() is not None, what="epoch 1")
    time.sleep(0.3)

    # the second comes once the first has been handled, as torchrun's would
    process.send_signal(signal.SIGINT)
    assert any("SIGINT" in line for line in process.stderr)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)

    # the steps after the save at the end of epoch 1 are kept too
    assert code == 130, err
    assert "resume with" in err
    assert load_checkpoint(out / "last.pt")["step"] > 20


def test_second_ctrl_c_a_moment_later_stops_at_once(monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr(train.time, "monotonic", lambda: clock["now"])

    train.request_stop(signal.SIGINT, None)
    clock["now"] += 0.2
    train.request_stop(signal.SIGINT, None)
    assert train.stop_requested.is_set()

    # a person pressing again, seconds later, means now
    clock["now"] += 2.0
    with pytest.raises(KeyboardInterrupt):
        train.request_stop(signal.SIGINT, None)


# --- kill -9 while a checkpoint is written -------------------------------------------------

# imports torch once, then forks a writer per round; each writer saves versions
# of a 16 MB checkpoint in a loop until it is killed
SAVING_LOOP = """
import os, sys
import torch
from engine.checkpoint import save_checkpoint

target = sys.argv[1]
version = 0
while sys.stdin.readline():
    version += 1_000_000
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)
        while True:
            version += 1
            weights = torch.full((4_000_000,), float(version))
            save_checkpoint(target, {"config": {}, "model": {"w": weights}, "written": version})
    print(pid, flush=True)
    os.waitpid(pid, 0)
"""


@pytest.mark.slow
def test_kill_9_while_saving_leaves_the_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "last.pt"
    script = tmp_path / "saving_loop.py"
    script.write_text(SAVING_LOOP)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loop = subprocess.Popen(
        [sys.executable, str(script), str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    chance = random.Random(9)
    versions, torn = [], 0
    try:
        for _ in range(6):
            loop.stdin.write("go\n")
            loop.stdin.flush()
            writer = int(loop.stdout.readline())

            # kill while this writer's temporary file is written, at a random moment in it
            left_before = set(tmp_path.glob("last.pt.*.tmp"))
            wait_for(lambda: target.exists(), what="the first checkpoint")
            wait_for(
                lambda old=left_before: set(tmp_path.glob("last.pt.*.tmp")) - old,
                what="a write in progress",
            )
            time.sleep(chance.uniform(0.0, 0.01))
            os.kill(writer, signal.SIGKILL)
            wait_for(lambda pid=writer: is_gone(pid), 30, "the writer to die")
            torn += bool(set(tmp_path.glob("last.pt.*.tmp")) - left_before)

            state = load_checkpoint(target)
            weights = state["model"]["w"]
            assert torch.all(weights == state["written"]), "a checkpoint holds two versions"
            versions.append(state["written"])
    finally:
        loop.kill()
        loop.wait()

    assert versions == sorted(versions)
    assert torn >= 1, "no kill landed inside a write; the test proved nothing"
    # what a crash leaves behind never looks like a checkpoint
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["last.pt"]
    assert all(
        p.name.endswith(".tmp") for p in tmp_path.iterdir() if p.name.startswith("last.pt.")
    )


def is_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie its parent has not reaped yet."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    return True


# --- a full disk -------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, tiny_model) -> Path:
    path = tmp_path / "last.pt"
    save_checkpoint(
        path, {"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    )
    return path


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FillsUp:
    """A file stream that takes `room` bytes, then fails like a full disk."""

    def __init__(self, stream, room: int):
        self.stream, self.room = stream, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stream.close()


def assert_untouched(path: Path, before: bytes):
    assert path.read_bytes() == before
    load_checkpoint(path)
    assert not list(path.parent.glob("*.tmp"))


def test_full_disk_at_fsync_is_reported_and_keeps_the_previous_checkpoint(saved, monkeypatch):
    before = saved.read_bytes()
    monkeypatch.setattr(checkpoint.os, "fsync", no_space)

    with pytest.raises(PixelCNNError, match="No space left on device") as caught:
        save_checkpoint(saved, {"config": {}, "model": {"w": torch.zeros(10)}})

    assert str(saved) in str(caught.value)
    assert_untouched(saved, before)


@pytest.mark.parametrize("room", [0, 100, 20_000])
def test_full_disk_while_torch_writes_is_reported_and_keeps_the_previous_checkpoint(
    saved, monkeypatch, room
):
    before = saved.read_bytes()
    opened = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda *a, **k: FillsUp(opened(*a, **k), room))

    with pytest.raises(PixelCNNError, match="No space left on device"):
        save_checkpoint(saved, {"config": {}, "model": {"w": torch.zeros(100_000)}})

    assert_untouched(saved, before)


def test_full_disk_during_training_stops_with_an_error_and_keeps_last_pt(
    small_mnist, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    fsyncs = {"count": 0}
    real_fsync = os.fsync

    def fills_up_after_three(descriptor):
        fsyncs["count"] += 1
        if fsyncs["count"] > 3:
            no_space()
        real_fsync(descriptor)

    monkeypatch.setattr(checkpoint.os, "fsync", fills_up_after_three)
    argv = [
        "--data",
        str(small_mnist),
        "--out",
        str(out),
        "--no-progress",
        "--save-minutes",
        "0.002",
    ]

    code = train.main(argv + cli_options(SMALL_RUN) + cli_options(TINY))

    err = capsys.readouterr().err
    assert code == 2
    assert "error: could not write checkpoint" in err and "No space left" in err
    assert 0 < load_checkpoint(out / "last.pt")["step"] < TOTAL_STEPS
    assert not list(out.glob("*.tmp"))


def test_full_disk_when_saving_on_ctrl_c_is_an_error_not_a_traceback(
    small_mnist, tmp_path, monkeypatch, capsys
):
    original = train.Trainer.train_step

    def step_then_interrupt(self, batch):
        loss = original(self, batch)
        if self.step == 2:
            # the disk fills up just as the user presses Ctrl-C
            monkeypatch.setattr(checkpoint.os, "fsync", no_space)
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(train.Trainer, "train_step", step_then_interrupt)
    out = tmp_path / "run"
    argv = ["--data", str(small_mnist), "--out", str(out), "--no-progress"]

    code = train.main(argv + cli_options(SMALL_RUN) + cli_options(TINY))

    err = capsys.readouterr().err
    assert code == 2
    assert "error: could not write checkpoint" in err
    assert not (out / "last.pt").exists() and not list(out.glob("*.tmp"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 300 kB file system, where the machine lets us mount one."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_really_full_disk_is_reported_and_keeps_the_previous_checkpoint(tiny_disk, tiny_model):
    path = tiny_disk / "last.pt"
    save_checkpoint(
        path, {"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    )
    before = path.read_bytes()

    with pytest.raises(PixelCNNError, match="No space left on device"):
        save_checkpoint(path, {"config": {}, "model": {"w": torch.zeros(200_000)}})

    assert_untouched(path, before)
