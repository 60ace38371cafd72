"""Training on several processes with DistributedDataParallel (gloo, on 127.0.0.1).

Two CPU ranks must end with the same weights as each other and as one process
on the same global batches; only rank 0 writes files; a Ctrl-C to torchrun
leaves a last.pt that resumes.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from engine import train
from engine.checkpoint import load_checkpoint
from engine.model import ModelConfig

# signals, fork and process groups as POSIX has them
pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork"),
    pytest.mark.slow,
]

ROOT = Path(__file__).resolve().parent.parent
WORLD_SIZE = 2
# 10 global batches of 16 digits, 8 on each rank
RUN = {
    "epochs": 1,
    "batch_size": 16,
    "subset": 160,
    "validation_size": 100,
    "warmup_steps": 2,
    "threads": 1,
}
TINY = {"channels": 8, "blocks": 2}
STEPS = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_one_rank(rank: int, port: int, data: str, folder: str):
    """One process of the group: trains, then leaves its weights and losses for the test."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    config = train.TrainConfig(data=data, out=f"{folder}/out{rank}", **RUN)
    trainer = train.Trainer(config, ModelConfig(**TINY))
    losses = []
    trainer.run(on_batch=lambda t, loss: losses.append(loss))
    trainer.dist.close()
    torch.save(
        {
            "model": trainer.model.state_dict(),
            "losses": losses,
            "ddp": trainer.ddp_model is not trainer.model,
        },
        f"{folder}/rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def two_ranks(small_mnist, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(
        train_one_rank,
        args=(free_port(), str(small_mnist), str(folder)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    return folder


@pytest.fixture(scope="module")
def one_process(small_mnist, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    trainer = train.Trainer(
        train.TrainConfig(data=str(small_mnist), out=str(out), **RUN), ModelConfig(**TINY)
    )
    losses = []
    trainer.run(on_batch=lambda t, loss: losses.append(loss))
    return {"model": trainer.model.state_dict(), "losses": losses}


def rank_result(folder: Path, rank: int) -> dict:
    return torch.load(folder / f"rank{rank}.pt", weights_only=True)


def test_ranks_train_through_distributed_data_parallel(two_ranks):
    assert all(rank_result(two_ranks, rank)["ddp"] for rank in range(WORLD_SIZE))


def test_both_ranks_end_with_identical_weights(two_ranks):
    first, second = (rank_result(two_ranks, rank)["model"] for rank in range(WORLD_SIZE))

    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_rank_losses_average_to_the_single_process_loss(two_ranks, one_process):
    # each rank's loss is the mean over its half of the global batch
    halves = [rank_result(two_ranks, rank)["losses"] for rank in range(WORLD_SIZE)]
    averaged = torch.tensor(halves, dtype=torch.float64).mean(0)
    single = torch.tensor(one_process["losses"], dtype=torch.float64)

    assert len(single) == STEPS
    torch.testing.assert_close(averaged, single, rtol=1e-4, atol=0)
    # and the ranks did see different digits
    assert halves[0] != halves[1]


def test_two_ranks_learn_the_single_process_weights(two_ranks, one_process):
    distributed = rank_result(two_ranks, 0)["model"]

    for name, weight in one_process["model"].items():
        torch.testing.assert_close(distributed[name], weight, rtol=0, atol=1e-4, msg=name)


def test_only_rank_0_writes_files(two_ranks):
    written = sorted(p.name for p in (two_ranks / "out0").iterdir())

    assert written == ["best.pt", "last.pt", "metrics.jsonl"]
    assert list((two_ranks / "out1").iterdir()) == []
    records = [json.loads(line) for line in (two_ranks / "out0" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [STEPS]


def test_rank_0_checkpoint_holds_the_trained_weights(two_ranks):
    saved = load_checkpoint(two_ranks / "out0" / "last.pt")
    trained = rank_result(two_ranks, 0)["model"]

    # plain parameter names: no "module." prefix from the DDP wrapper
    assert saved["model"].keys() == trained.keys()
    assert all(torch.equal(saved["model"][k], trained[k]) for k in trained)
    assert saved["step"] == STEPS


def torchrun(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`torchrun --nproc-per-node 2 -m engine.train` on 127.0.0.1 only, in its own session."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    command += ["--nproc-per-node", str(WORLD_SIZE), "--master-addr", "127.0.0.1"]
    command += ["--master-port", str(free_port()), "-m", "engine.train"]
    command += ["--data", str(data), "--out", str(out), "--no-progress"]
    for key, value in {**RUN, **TINY}.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    command += extra
    # its own session stands for the terminal's foreground process group
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_ctrl_c_to_torchrun_saves_a_run_that_resumes_on_one_process(small_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    group = torchrun(small_mnist, out, "--epochs", "20", "--save-minutes", "10")

    # the header comes just before the first step; let some steps run
    header = group.stdout.readline()
    assert "2 process(es)" in header
    time.sleep(1.0)
    # the terminal sends SIGINT to the whole group: torchrun and both workers
    os.killpg(group.pid, signal.SIGINT)
    out_text, err_text = group.communicate(timeout=120)

    # the workers stopped together after a whole step, and rank 0 alone saved it
    assert err_text.count("resume with") == 1, err_text
    assert "Traceback" not in err_text.split("resume with")[0]
    assert {p.name for p in out.iterdir()} <= {"last.pt", "best.pt", "metrics.jsonl", ".lock"}
    stopped = load_checkpoint(out / "last.pt")
    assert 0 < stopped["step"] < 20 * STEPS

    # the same global batches of 16 go on in one process, here to the epoch's end
    epochs = str(stopped["epoch"] + 1)
    argv = ["--out", str(out), "--resume", "--data", str(small_mnist), "--epochs", epochs]
    code = train.main([*argv, "--no-progress"])

    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["step"] == (stopped["epoch"] + 1) * STEPS
