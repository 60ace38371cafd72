"""Test-set likelihood: the per-image NLL, its units, and the evaluate command.

The command runs on the `trained_checkpoint` fixture, a tiny model trained
for a few dozen steps, with --limit to keep it quick.
"""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.evaluate import dataset_nll, evaluate_checkpoint, figures, nats_per_image
from engine.evaluate import main as evaluate_main
from engine.model import ModelConfig, build_model

ROOT = Path(__file__).resolve().parent.parent


def test_nats_per_image_is_the_negated_log_likelihood_of_the_contract():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 28, 28)
    images = torch.randint(0, 2, (3, 1, 28, 28)).float()

    nats = nats_per_image(logits, images)

    log_likelihood = images * F.logsigmoid(logits) + (1 - images) * F.logsigmoid(-logits)
    assert torch.allclose(nats, -log_likelihood.sum(dim=(1, 2, 3)), rtol=1e-5)


def test_zero_logits_cost_one_bit_per_pixel():
    images = torch.randint(0, 2, (2, 1, 28, 28)).float()

    nats = nats_per_image(torch.zeros_like(images), images)

    assert torch.allclose(nats, torch.full((2,), 784 * math.log(2)))


def test_figures_convert_nats_per_image_to_bits_per_dimension_and_per_pixel():
    values = figures(81.30)

    assert values["nats_per_image"] == 81.30
    assert values["bits_per_dim"] == pytest.approx(81.30 / 784 / math.log(2))
    assert values["bits_per_dim"] == pytest.approx(0.1496, abs=1e-4)
    assert values["bce_per_pixel"] == pytest.approx(81.30 / 784)


def test_one_bit_per_pixel_is_one_bit_per_dimension():
    assert figures(784 * math.log(2))["bits_per_dim"] == pytest.approx(1.0)


def test_dataset_nll_does_not_depend_on_the_batch_size(tiny_model):
    images = torch.randint(0, 2, (23, 1, 28, 28)).float()

    whole = dataset_nll(tiny_model, images, batch_size=500)
    in_pieces = dataset_nll(tiny_model, images, batch_size=7)

    assert in_pieces == pytest.approx(whole, rel=1e-6)


def test_dataset_nll_leaves_a_training_model_in_training_mode():
    model = build_model(ModelConfig(channels=4, blocks=1, dropout=0.5)).train()

    first = dataset_nll(model, torch.zeros(2, 1, 28, 28))
    second = dataset_nll(model, torch.zeros(2, 1, 28, 28))

    # dropout is off while measuring, so the figure repeats
    assert first == second
    assert model.training


def test_evaluate_reports_the_trained_and_an_untrained_net(trained_checkpoint, mnist_path):
    result = evaluate_checkpoint(trained_checkpoint, data=str(mnist_path), limit=50)

    assert result["digits"] == 50
    assert result["binarization"] == "dynamic"
    # an untrained net is close to one bit per pixel; training must beat it clearly
    assert 0.8 < result["untrained"]["bits_per_dim"] < 1.2
    assert result["trained"]["nats_per_image"] < result["untrained"]["nats_per_image"] - 50


def test_evaluate_command_prints_trained_and_untrained_lines(
    trained_checkpoint, mnist_path, capsys
):
    code = evaluate_main(
        ["--checkpoint", str(trained_checkpoint), "--data", str(mnist_path), "--limit", "50"]
    )

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("test NLL on 50 digits")
    labels = [line.split()[0] for line in lines[1:3]]
    assert labels == ["trained", "untrained"]
    result = evaluate_checkpoint(trained_checkpoint, data=str(mnist_path), limit=50)
    assert f"{result['trained']['nats_per_image']:8.2f} nats/image" in lines[1]
    assert lines[3].startswith("training gained")


@pytest.mark.slow
def test_evaluate_module_runs_from_the_command_line(trained_checkpoint, mnist_path):
    command = [
        sys.executable, "-m", "engine.evaluate", "--checkpoint", str(trained_checkpoint),
        "--data", str(mnist_path), "--limit", "20",
    ]  # fmt: skip

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "trained" in done.stdout and "untrained" in done.stdout


@pytest.mark.parametrize(
    "options, named",
    [
        (["--limit", "0"], "--limit"),
        (["--checkpoint", "nowhere/absent.pt"], "absent.pt"),
    ],
)
def test_evaluate_command_refuses_bad_options_in_one_line(mnist_path, capsys, options, named):
    code = evaluate_main(["--data", str(mnist_path), *options])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and named in err
    assert err.count("\n") == 1
