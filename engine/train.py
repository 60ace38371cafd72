"""Train a PixelCNN on binarized MNIST.

    python -m engine.train --data ../shared/data/mnist --out runs/default --epochs 20
    python -m engine.train --out runs/default --resume        # continue that run
    torchrun --nproc_per_node=2 -m engine.train --out runs/ddp ...   # several processes

Writes <out>/last.pt (resumable, also on Ctrl-C or SIGTERM), <out>/best.pt
(lowest validation NLL) and <out>/metrics.jsonl (one line per epoch).
"""

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.data import (
    BINARIZATIONS,
    binarize_fixed,
    load_split,
    resolve_data_dir,
    train_validation_split,
    training_batches,
)
from engine.errors import PixelCNNError
from engine.evaluate import dataset_nll
from engine.model import ARCHITECTURES, ModelConfig, build_model, count_parameters
from engine.run_folder import hold_run_folder

log = logging.getLogger(__name__)
SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """The run's options; saved in every checkpoint so --resume repeats them."""

    data: str | None = None
    out: str = "runs/default"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    schedule: str = "cosine"
    warmup_steps: int = 200
    min_lr_ratio: float = 0.02
    seed: int = 0
    device: str = "auto"
    subset: int | None = None
    validation_size: int = 5000
    binarization: str = "dynamic"
    threads: int | None = None
    save_minutes: float = 10.0
    channels_last: bool = False

    def validate(self):
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (0 < self.lr < 1, f"--lr must be in (0, 1), got {self.lr}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}"),
            (self.warmup_steps >= 0, "--warmup-steps must not be negative"),
            (self.subset is None or self.subset >= 1, "--subset must be at least 1"),
            (self.validation_size >= 1, "--validation-size must be at least 1"),
            (self.binarization in BINARIZATIONS, f"--binarization must be one of {BINARIZATIONS}"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1"),
            (self.save_minutes > 0, "--save-minutes must be positive"),
            (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        ]
        for ok, message in checks:
            if not ok:
                raise PixelCNNError(message + ".")


class Interrupted(Exception):
    """Stops training at a batch boundary after Ctrl-C or SIGTERM; last.pt is saved."""


# set by the command line's signal handlers; the loop checks it between batches,
# because an exception raised wherever a signal lands could split an optimizer
# step from its batch counter and leave an inconsistent last.pt
stop_requested = threading.Event()


# torchrun forwards the terminal's Ctrl-C to workers that got it from the terminal
# too: a repeat this soon is that same key press, not a second one
REPEAT_SECONDS = 1.0
first_request = {"at": 0.0}


def request_stop(signum, frame):
    if stop_requested.is_set():
        if time.monotonic() - first_request["at"] < REPEAT_SECONDS:
            return
        # a second Ctrl-C means now, whatever the state
        raise KeyboardInterrupt
    first_request["at"] = time.monotonic()
    stop_requested.set()
    log.info("%s received: stopping after this batch", signal.Signals(signum).name)


def lr_factor(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio (or constant)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min((step - config.warmup_steps) / max(total_steps - config.warmup_steps, 1), 1.0)
    floor = config.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise PixelCNNError(
            "--device cuda was asked for, but CUDA is not available here; use --device cpu."
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class Distributed:
    """Rank and world size under torchrun; one process otherwise."""

    def __init__(self, device: torch.device):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.active = self.world_size > 1
        if self.active and device.type == "cuda":
            # before the process group, so NCCL opens no context on GPU 0 for every rank
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if self.active and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
        self.is_main = self.rank == 0

    def local_device(self, device: torch.device) -> torch.device:
        if device.type == "cuda" and self.active:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def sum(self, value: float, device) -> float:
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.item()

    def close(self):
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


class Trainer:
    """One training run: data, model, optimizer, schedule and the epoch loop.

    It reports through the `on_batch(trainer, loss)` and `on_epoch(trainer,
    record)` callbacks; the command line decides what to show.
    """

    def __init__(self, config: TrainConfig, model_config: ModelConfig, resume_state=None):
        config.validate()
        self.config = config
        self.model_config = model_config
        self.out = Path(config.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PixelCNNError(
                f"run folder {self.out} could not be made ({error}); choose another --out."
            ) from error
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = pick_device(config.device)
        self.dist = Distributed(self.device)
        self.device = self.dist.local_device(self.device)
        if config.batch_size % self.dist.world_size:
            raise PixelCNNError(
                f"--batch-size {config.batch_size} must divide evenly among "
                f"{self.dist.world_size} processes."
            )

        # data: a seeded validation hold-out, binarized once with a fixed seed
        folder = resolve_data_dir(config.data)
        train, validation = train_validation_split(
            load_split(folder, train=True), config.validation_size
        )
        self.train_images = train.images[: config.subset]
        self.validation = binarize_fixed(validation.images, config.binarization)
        self.steps_per_epoch = len(self.train_images) // config.batch_size
        if self.steps_per_epoch == 0:
            raise PixelCNNError(
                f"{len(self.train_images)} training digits make no batch of {config.batch_size}; "
                "lower --batch-size or raise --subset."
            )
        self.total_steps = self.steps_per_epoch * config.epochs

        # model and optimizer
        torch.manual_seed(config.seed)
        self.model = build_model(model_config).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ddp_model = self.model
        if self.dist.active:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.total_steps, config)
        )

        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        # the epoch's running training loss, so a resumed epoch reports all of it
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        self.best_validation = math.inf
        self.elapsed = 0.0
        if resume_state is not None:
            self.restore(resume_state)

    def restore(self, state: dict):
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.epoch = state["epoch"]
            self.batch_in_epoch = state["batch_in_epoch"]
            self.step = state["step"]
            self.best_validation = state["best_validation"]
            if "rng_state" in state:
                torch.set_rng_state(state["rng_state"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            # a checkpoint edited or assembled elsewhere: say so instead of a traceback;
            # load_state_dict puts its first mismatch on the second line
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            first = lines[min(1, len(lines) - 1)] if lines else type(error).__name__
            raise PixelCNNError(
                f"the run in {self.out} cannot be resumed: its last.pt does not hold a "
                f"consistent training state ({first}). Start a new run with another --out."
            ) from error
        self.elapsed = state.get("elapsed", 0.0)
        # checkpoints of older versions lack these; then the epoch's figure
        # covers the batches after the resume only, and dropout draws afresh
        self.epoch_loss_sum = state.get("epoch_loss_sum", 0.0)
        self.epoch_loss_count = state.get("epoch_loss_count", 0)

    def state(self) -> dict:
        return {
            "config": self.model_config.to_dict(),
            "train": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best_validation": self.best_validation,
            "elapsed": self.elapsed,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            # dropout's masks come from the global generator
            "rng_state": torch.get_rng_state(),
            "parameters": count_parameters(self.model),
        }

    def save(self, name: str, **extra):
        if self.dist.is_main:
            save_checkpoint(self.out / name, {**self.state(), **extra})

    def validate(self) -> float:
        share = math.ceil(len(self.validation) / self.dist.world_size)
        mine = self.validation[self.dist.rank * share : (self.dist.rank + 1) * share]
        total = dataset_nll(self.model, mine, device=self.device) * len(mine)
        return self.dist.sum(total, self.device) / len(self.validation)

    def train_step(self, batch: torch.Tensor) -> float:
        batch = batch.to(self.device)
        if self.config.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        logits = self.ddp_model(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch, reduction="sum") / len(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def run(self, on_batch=None, on_epoch=None) -> float:
        """Trains until the last epoch; returns the best validation NLL."""
        self.model.train()
        last_save = time.monotonic()
        while self.epoch < self.config.epochs:
            self.stop_if_requested()
            epoch_start, batches_run = time.monotonic(), 0
            batches = training_batches(
                self.train_images,
                self.config.batch_size,
                self.epoch,
                self.config.seed,
                self.config.binarization,
                self.dist.rank,
                self.dist.world_size,
            )
            for index, batch in enumerate(batches):
                # a resumed epoch draws its finished batches again, unused,
                # so the data stream continues exactly where it stopped
                if index < self.batch_in_epoch:
                    continue
                tick = time.monotonic()
                loss = self.train_step(batch)
                self.batch_in_epoch = index + 1
                self.step += 1
                self.epoch_loss_sum += loss
                self.epoch_loss_count += 1
                self.elapsed += time.monotonic() - tick
                batches_run += 1
                if on_batch:
                    on_batch(self, loss)
                self.stop_if_requested()
                if time.monotonic() - last_save > self.config.save_minutes * 60:
                    self.save("last.pt")
                    last_save = time.monotonic()

            record = self.finish_epoch(batches_run, time.monotonic() - epoch_start)
            if on_epoch:
                on_epoch(self, record)
        return self.best_validation

    def stop_if_requested(self):
        """Raises Interrupted when a stop was asked for, on every rank at the same batch."""
        requested = float(stop_requested.is_set())
        if self.dist.sum(requested, self.device) > 0:
            raise Interrupted("stop requested")

    def finish_epoch(self, batches_run, seconds) -> dict:
        validation = self.validate()
        self.model.train()
        train_loss = self.dist.sum(self.epoch_loss_sum, self.device) / max(
            self.dist.sum(self.epoch_loss_count, self.device), 1
        )
        images = batches_run * self.config.batch_size
        record = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_nll": train_loss,
            "val_nll": validation,
            "val_bpd": validation / (784 * math.log(2)),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": images / max(seconds, 1e-9),
            "elapsed_s": self.elapsed,
        }
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        improved = validation < self.best_validation
        self.best_validation = min(self.best_validation, validation)
        if self.dist.is_main:
            with open(self.out / "metrics.jsonl", "a") as log_file:
                log_file.write(json.dumps(record) + "\n")
            self.save("last.pt")
            if improved:
                self.save("best.pt")
        return record


def parse_args(argv):
    train_defaults, model_defaults = TrainConfig(), ModelConfig()
    parser = argparse.ArgumentParser(
        prog="python -m engine.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", help="MNIST folder (default $PIXELCNN_DATA or the cache)")
    parser.add_argument("--out", default=train_defaults.out, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue <out>/last.pt")
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"epochs in all (default {train_defaults.epochs}; with --resume, the run's own)",
    )
    parser.add_argument("--batch-size", type=int, default=train_defaults.batch_size)
    parser.add_argument("--lr", type=float, default=train_defaults.lr)
    parser.add_argument("--schedule", choices=SCHEDULES, default=train_defaults.schedule)
    parser.add_argument("--warmup-steps", type=int, default=train_defaults.warmup_steps)
    parser.add_argument("--seed", type=int, default=train_defaults.seed)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--subset", type=int, help="train on the first N digits only")
    parser.add_argument("--validation-size", type=int, default=train_defaults.validation_size)
    parser.add_argument("--binarization", choices=BINARIZATIONS, default="dynamic")
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (with --resume, the run's own)"
    )
    parser.add_argument("--save-minutes", type=float, default=train_defaults.save_minutes)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--arch", choices=ARCHITECTURES, default=model_defaults.arch)
    parser.add_argument("--channels", type=int, default=model_defaults.channels)
    parser.add_argument("--blocks", type=int, default=model_defaults.blocks)
    parser.add_argument("--dropout", type=float, default=model_defaults.dropout)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def configs_from_args(args):
    if args.resume:
        # TODO: every rank reads <out>/last.pt, so resuming on several machines needs the
        # run folder on shared storage (or a copy of last.pt at the same path on each)
        path = Path(args.out) / "last.pt"
        state = load_checkpoint(path)
        saved = state.get("train")
        if not isinstance(saved, dict):
            raise PixelCNNError(
                f"{path} holds a model but no training run, so it cannot be resumed; "
                "start a new run with another --out."
            )
        # where and how long may change on resume; what is learned may not
        saved.update(
            data=args.data or saved["data"],
            out=args.out,
            epochs=saved["epochs"] if args.epochs is None else args.epochs,
            device=args.device,
            threads=args.threads or saved["threads"],
        )
        known = {f.name for f in fields(TrainConfig)}
        return (
            TrainConfig(**{k: v for k, v in saved.items() if k in known}),
            ModelConfig.from_dict(state["config"]),
            state,
        )
    if args.epochs is None:
        args.epochs = TrainConfig.epochs
    train_config = TrainConfig(
        **{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    )
    model_config = ModelConfig(
        arch=args.arch, channels=args.channels, blocks=args.blocks, dropout=args.dropout
    )
    if (Path(args.out) / "last.pt").exists():
        raise PixelCNNError(
            f"{args.out} already holds a run; pass --resume to continue it "
            "or choose another --out."
        )
    return train_config, model_config, None


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    stop_requested.clear()
    previous_handlers = {
        number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        # under torchrun only rank 0 writes checkpoints, so only it holds the folder
        is_main = int(os.environ.get("RANK", "0")) == 0
        with (
            hold_run_folder(args.out, create=not args.resume)
            if is_main
            else contextlib.nullcontext()
        ):
            return train_until_done_or_stopped(args)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)


def train_until_done_or_stopped(args) -> int:
    trainer = None
    try:
        train_config, model_config, state = configs_from_args(args)
        trainer = Trainer(train_config, model_config, state)
        return run_with_progress(trainer, show_bar=not args.no_progress)
    except Interrupted:
        # a full disk as the run stops raises PixelCNNError here; the older last.pt stays
        trainer.save("last.pt")
        if trainer.dist.is_main:
            print(
                f"\nstopped; resume with: python -m engine.train --out {trainer.out} --resume",
                file=sys.stderr,
            )
        return 130
    except KeyboardInterrupt:
        # a second Ctrl-C may land mid-step: keep the last.pt saved before
        print("\nstopped at once; last.pt is the one saved before", file=sys.stderr)
        return 130
    finally:
        if trainer is not None:
            trainer.dist.close()


def run_with_progress(trainer: Trainer, show_bar: bool) -> int:
    from tqdm import tqdm

    main_rank = trainer.dist.is_main
    if main_rank:
        print(
            f"{trainer.model_config.arch} PixelCNN, "
            f"{count_parameters(trainer.model):,} parameters, "
            f"{len(trainer.train_images)} training digits, device {trainer.device}, "
            f"{trainer.dist.world_size} process(es)"
        )
    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.step,
        disable=not (show_bar and main_rank),
        unit="batch",
        dynamic_ncols=True,
    )
    started = {"time": time.monotonic(), "step": trainer.step}

    def on_batch(t: Trainer, loss: float):
        rate = (
            (t.step - started["step"]) * t.config.batch_size / (time.monotonic() - started["time"])
        )
        bar.set_postfix_str(f"epoch {t.epoch + 1} loss {loss:.1f} nats/img {rate:.0f} img/s")
        bar.update(1)

    def on_epoch(t: Trainer, record: dict):
        if main_rank:
            bar.write(
                f"epoch {record['epoch']}: train {record['train_nll']:.2f}, "
                f"validation {record['val_nll']:.2f} nats/image "
                f"({record['val_bpd']:.4f} bits/dim), {record['images_per_s']:.0f} img/s"
            )

    best = trainer.run(on_batch, on_epoch)
    bar.close()
    if main_rank:
        print(f"best validation NLL {best:.2f} nats/image; checkpoints in {trainer.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
