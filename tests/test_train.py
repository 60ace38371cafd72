"""The trainer: it learns, it resumes as if never stopped, its command line refuses bad runs.

Runs are tiny (a few hundred real digits, a 4-channel net) so each takes a
second or two on a CPU.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine.train
from engine.checkpoint import load_checkpoint
from engine.evaluate import dataset_nll
from engine.model import ModelConfig
from engine.train import TrainConfig, Trainer, lr_factor
from engine.train import main as train_main

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ModelConfig(channels=4, blocks=1)
# timing figures differ run to run; everything else must repeat exactly
TIMING = ("images_per_s", "elapsed_s")


def tiny_run(mnist_path, out, **changes) -> TrainConfig:
    options = dict(
        data=str(mnist_path),
        out=str(out),
        epochs=2,
        batch_size=16,
        subset=96,
        validation_size=64,
        warmup_steps=2,
        lr=5e-3,
        threads=1,
    )
    return TrainConfig(**{**options, **changes})


def without_timing(records):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in records]


def metrics_lines(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory, mnist_path):
    """(trainer after its run, its epoch records, validation NLL before training)."""
    out = tmp_path_factory.mktemp("learning")
    config = tiny_run(mnist_path, out, subset=256, batch_size=32, validation_size=128)
    trainer = Trainer(config, TINY_MODEL)
    untrained = dataset_nll(trainer.model, trainer.validation)
    records = []
    trainer.run(on_epoch=lambda t, record: records.append(record))
    return trainer, records, untrained


def test_short_run_lowers_the_validation_nll(learning_run):
    trainer, records, untrained = learning_run

    trained = dataset_nll(trainer.model, trainer.validation)

    # an untrained net sits near 784 ln 2 = 543 nats; 16 steps take off over 100
    assert trained < untrained - 100
    assert records[-1]["val_nll"] == pytest.approx(trained, rel=1e-5)


def test_run_writes_last_best_and_one_metrics_line_per_epoch(learning_run):
    trainer, records, _ = learning_run

    assert metrics_lines(trainer.out) == records
    assert [r["epoch"] for r in records] == [1, 2]
    last = load_checkpoint(trainer.out / "last.pt")
    best = load_checkpoint(trainer.out / "best.pt")
    assert last["epoch"] == 2 and last["batch_in_epoch"] == 0
    assert best["best_validation"] == min(r["val_nll"] for r in records)


def test_epoch_record_converts_nats_to_bits_per_dimension(learning_run):
    _, records, _ = learning_run

    for record in records:
        assert record["val_bpd"] == pytest.approx(record["val_nll"] / (784 * 0.6931471805599453))


class StopAt:
    """An on_batch callback that stops the run like Ctrl-C after a given step."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, trainer, loss):
        if trainer.step == self.step:
            raise KeyboardInterrupt


def test_resumed_run_ends_where_an_uninterrupted_one_does(mnist_path, tmp_path):
    # with dropout, so the random masks must continue where they stopped too
    model_config = ModelConfig(channels=4, blocks=1, dropout=0.25)
    straight_records, resumed_records = [], []

    # the reference: two epochs of six batches in one go
    straight = Trainer(tiny_run(mnist_path, tmp_path / "straight"), model_config)
    straight.run(on_epoch=lambda t, record: straight_records.append(record))

    # the same run stopped in the middle of the first epoch, saved, and resumed
    config = tiny_run(mnist_path, tmp_path / "stopped")
    first = Trainer(config, model_config)
    with pytest.raises(KeyboardInterrupt):
        first.run(on_batch=StopAt(step=3))
    first.save("last.pt")
    state = load_checkpoint(tmp_path / "stopped" / "last.pt")
    second = Trainer(config, model_config, resume_state=state)
    second.run(on_epoch=lambda t, record: resumed_records.append(record))

    assert state["step"] == 3 and state["batch_in_epoch"] == 3
    for name, weight in straight.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], weight), name
    assert without_timing(resumed_records) == without_timing(straight_records)
    assert without_timing(metrics_lines(tmp_path / "stopped")) == without_timing(
        metrics_lines(tmp_path / "straight")
    )


def test_lr_warms_up_linearly_then_decays_to_its_floor():
    config = TrainConfig(warmup_steps=4, min_lr_ratio=0.1)

    factors = [lr_factor(step, 104, config) for step in range(105)]

    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0)
    assert factors[54] == pytest.approx(0.55)
    assert factors[104] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))


def test_constant_schedule_stays_at_the_full_rate_after_warm_up():
    config = TrainConfig(warmup_steps=2, schedule="constant")

    assert [lr_factor(step, 50, config) for step in (0, 1, 2, 49)] == [0.5, 1.0, 1.0, 1.0]


def cli_options(mnist_path, out, *extra) -> list[str]:
    return [
        "--data", str(mnist_path), "--out", str(out), "--epochs", "2", "--batch-size", "16",
        "--subset", "96", "--validation-size", "64", "--warmup-steps", "2", "--lr", "5e-3",
        "--channels", "4", "--blocks", "1", "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip


def test_sigterm_saves_a_resumable_run_that_ends_like_an_uninterrupted_one(
    mnist_path, tmp_path, monkeypatch, capsys
):
    assert train_main(cli_options(mnist_path, tmp_path / "straight")) == 0

    # SIGTERM lands just after an optimizer step, before the trainer counts it
    sent = []
    original_train_step = Trainer.train_step

    def send_sigterm_after_the_update(optimizer, args, kwargs):
        if sent:
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            # without a handler the signal would end the whole test session
            pytest.fail("the training command installed no SIGTERM handler")
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)

    def train_step(trainer, batch):
        if trainer.step == 2 and not sent:
            trainer.optimizer.register_step_post_hook(send_sigterm_after_the_update)
        return original_train_step(trainer, batch)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    stopped = tmp_path / "stopped"
    code = train_main(cli_options(mnist_path, stopped))
    saved = load_checkpoint(stopped / "last.pt")
    # --epochs left out: the run keeps its own
    resumed = train_main(["--out", str(stopped), "--resume", "--no-progress"])

    assert code == 130
    assert "--resume" in capsys.readouterr().err
    assert saved["step"] == 3 and saved["batch_in_epoch"] == 3
    assert resumed == 0
    straight_weights = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed_weights = load_checkpoint(stopped / "last.pt")["model"]
    for name, weight in straight_weights.items():
        assert torch.equal(resumed_weights[name], weight), name
    assert signal.getsignal(signal.SIGTERM) is not engine.train.request_stop


@pytest.mark.parametrize(
    "option, named",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "3"], "--lr"),
        (["--channels", "0"], "channels"),
        (["--subset", "8"], "make no batch"),
    ],
)
def test_bad_option_is_one_error_line_and_exit_2(mnist_path, tmp_path, capsys, option, named):
    code = train_main(cli_options(mnist_path, tmp_path / "run", *option))

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and named in err
    assert err.count("\n") == 1


def test_unknown_choice_is_refused_by_the_parser_with_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        train_main(["--out", str(tmp_path), "--arch", "lstm"])

    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_out_folder_holding_a_run_is_refused_without_resume(mnist_path, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"an earlier run")

    code = train_main(cli_options(mnist_path, run))

    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == b"an earlier run"
    assert not (run / "metrics.jsonl").exists()


def test_resume_without_a_run_is_refused(tmp_path, capsys):
    code = train_main(["--out", str(tmp_path / "empty"), "--resume"])

    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow
def test_two_processes_under_torchrun_train_like_one(mnist_path, tmp_path):
    single = tmp_path / "single"
    assert train_main(cli_options(mnist_path, single, "--epochs", "1")) == 0

    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "engine.train", *cli_options(mnist_path, tmp_path / "ddp", "--epochs", "1"),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=180
    )

    assert done.returncode == 0, done.stderr[-2000:]
    single_state = load_checkpoint(single / "last.pt")
    ddp_state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp_state["step"] == single_state["step"] == 6
    for name, weight in single_state["model"].items():
        assert torch.allclose(ddp_state["model"][name], weight, atol=1e-5), name
    single_record, ddp_record = metrics_lines(single)[0], metrics_lines(tmp_path / "ddp")[0]
    assert ddp_record["val_nll"] == pytest.approx(single_record["val_nll"], rel=1e-4)
    assert ddp_record["train_nll"] == pytest.approx(single_record["train_nll"], rel=1e-4)
