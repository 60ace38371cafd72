"""The two architectures: causality read off autograd, the blind spot, the summary.

Dependence is the exact zero pattern of the Jacobian of all output logits
with respect to all input pixels, computed in chunks of one backward pass.
"""

import functools
import json

import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.errors import PixelCNNError
from engine.model import ModelConfig, build_model, layer_summary
from engine.model import main as model_main

# causality is a matter of wiring, not width: few channels keep the Jacobians quick
TWO_STREAM = ModelConfig(channels=4, blocks=2)
TWO_STREAM_WIDE_KERNELS = ModelConfig(channels=4, blocks=1, v_kernel=(3, 5), h_kernel=(3, 3))
MASKED = ModelConfig(arch="masked", channels=4, blocks=2)
MASKED_5X5 = ModelConfig(arch="masked", channels=4, blocks=3, first_kernel=5, masked_kernel=5)
# the stack the blind-spot figure of the literature is quoted for
MASKED_LITERATURE = ModelConfig(
    arch="masked", channels=4, blocks=5, first_kernel=7, masked_kernel=3
)


@functools.cache
def dependence(config: ModelConfig, height: int = 28, width: int = 28) -> torch.Tensor:
    """[P, P] bool, P = height*width: (o, p) is True where output o depends on input p.

    Pixels are numbered in raster order. Row o of the Jacobian is the input
    gradient of output o; one backward pass over a batch gives a chunk of rows,
    one image per output pixel.
    """
    torch.manual_seed(0)
    model = build_model(config)
    if config.arch == "masked":
        # positive weights on positive inputs keep every ReLU open, so a zero
        # gradient means no path at all rather than a dead unit
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.abs_()

    pixels = height * width
    rows = []
    for start in range(0, pixels, 112):
        outputs = torch.arange(start, min(start + 112, pixels))
        image = torch.rand(len(outputs), 1, height, width, requires_grad=True)
        logits = model(image).view(len(outputs), pixels)
        logits[torch.arange(len(outputs)), outputs].sum().backward()
        rows.append(image.grad.view(len(outputs), pixels) != 0)
    return torch.cat(rows)


@pytest.mark.parametrize(
    "config, height, width",
    [
        (TWO_STREAM, 28, 28),
        (TWO_STREAM_WIDE_KERNELS, 16, 12),
        (MASKED, 28, 28),
        (MASKED_5X5, 12, 16),
    ],
    ids=["two_stream", "two_stream_wide_kernels", "masked", "masked_5x5"],
)
def test_no_output_depends_on_its_own_pixel_or_a_later_one(config, height, width):
    depends = dependence(config, height, width)

    # on and above the diagonal: input pixel p at or after output pixel o
    at_or_after = torch.ones_like(depends).triu()
    offending = torch.nonzero(depends & at_or_after)
    assert len(offending) == 0, f"output, input pairs breaking causality: {offending[:5]}"
    # the check has something to find: the outputs do depend on earlier pixels
    assert depends.tril(-1).sum() > depends.shape[0]


@pytest.mark.parametrize(
    "config, height, width",
    [(TWO_STREAM, 28, 28), (TWO_STREAM_WIDE_KERNELS, 16, 12)],
    ids=["two_stream", "two_stream_wide_kernels"],
)
def test_two_stream_output_depends_on_the_pixel_to_the_left_and_the_pixel_above(
    config, height, width
):
    depends = dependence(config, height, width)

    missing = []
    for i in range(height):
        for j in range(width):
            output = i * width + j
            if j > 0 and not depends[output, output - 1]:
                missing.append(((i, j), "left"))
            if i > 0 and not depends[output, output - width]:
                missing.append(((i, j), "above"))
    assert missing == []


def test_masked_stack_of_the_literature_has_its_blind_spot():
    depends = dependence(MASKED_LITERATURE)
    row, col = 27, 14
    seen = depends[row * 28 + col].view(28, 28)

    # 770 pixels come before (27, 14); the published figure is 129 seen
    assert row * 28 + col == 770
    assert int(seen.sum()) == 129
    # a blind spot, not just a short reach: a pixel is missed although one
    # farther up in its column is seen
    assert seen[22, 18] and not seen[26, 18]


@pytest.mark.parametrize("config", [TWO_STREAM, MASKED], ids=["two_stream", "masked"])
def test_model_maps_a_batch_of_images_to_one_logit_per_pixel(config):
    model = build_model(config).eval()
    images = torch.randint(0, 2, (3, 1, 28, 28)).float()

    with torch.no_grad():
        logits = model(images)

    assert logits.shape == (3, 1, 28, 28)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_config_round_trips_through_json_with_lists_for_tuples():
    config = ModelConfig(arch="masked", channels=16, blocks=3, v_kernel=(3, 5), dropout=0.1)

    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))

    assert restored == config
    assert restored.v_kernel == (3, 5)


@pytest.mark.parametrize(
    "values, named",
    [
        ({"arch": "lstm"}, "lstm"),
        ({"channels": 0}, "channels"),
        ({"blocks": -1}, "blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"v_kernel": (2, 2)}, "v_kernel"),
        ({"h_kernel": (0, 2)}, "h_kernel"),
        ({"first_kernel": 4}, "first_kernel"),
        ({"masked_kernel": 0}, "masked_kernel"),
        ({"colour": True}, "colour"),
        ({"channels": "eight"}, "malformed"),
    ],
)
def test_config_refuses_a_bad_value_naming_it(values, named):
    with pytest.raises(PixelCNNError, match=named):
        ModelConfig.from_dict(values)


def test_config_refuses_something_other_than_a_dict():
    with pytest.raises(PixelCNNError, match="dict"):
        ModelConfig.from_dict([("channels", 8)])


def expected_two_stream_parameters(config: ModelConfig) -> dict[str, int]:
    """Per-layer weights plus biases, written out from the architecture."""
    C = config.channels
    vh, vw = config.v_kernel
    hh, hw = config.h_kernel
    expected = {
        # image plus ones channel in
        "v_input": 2 * C * 2 * 3 + C,
        "h_input_above": 2 * C * 1 * 3 + C,
        "h_input_left": 2 * C * 2 * 1 + C,
        # concat_elu doubles what goes in; the gate needs 2C out
        "output": 2 * C * 1 + 1,
    }
    for b in range(config.blocks):
        expected[f"v_blocks.{b}.conv_in"] = 2 * C * C * vh * vw + C
        expected[f"v_blocks.{b}.conv_out"] = 2 * C * 2 * C * vh * vw + 2 * C
        expected[f"h_blocks.{b}.conv_in"] = 2 * C * C * hh * hw + C
        expected[f"h_blocks.{b}.skip"] = 2 * C * C + C
        expected[f"h_blocks.{b}.conv_out"] = 2 * C * 2 * C * hh * hw + 2 * C
    return expected


def expected_masked_parameters(config: ModelConfig) -> dict[str, int]:
    C, first, masked = config.channels, config.first_kernel, config.masked_kernel
    expected = {"input": 2 * C * first * first + C, "output": C + 1}
    for b in range(config.blocks):
        expected[f"layers.{b}"] = C * C * masked * masked + C
    return expected


@pytest.mark.parametrize(
    "config, expected_of",
    [
        (TWO_STREAM, expected_two_stream_parameters),
        (
            ModelConfig(channels=5, blocks=3, v_kernel=(3, 5), h_kernel=(2, 3)),
            expected_two_stream_parameters,
        ),
        (MASKED, expected_masked_parameters),
        (MASKED_5X5, expected_masked_parameters),
    ],
    ids=["two_stream", "two_stream_other_kernels", "masked", "masked_5x5"],
)
def test_summary_figures_equal_the_closed_form_of_each_layer(config, expected_of):
    rows = layer_summary(build_model(config))

    expected = expected_of(config)
    assert {row["name"]: row["params"] for row in rows} == expected
    assert {row["name"]: row["closed_form"] for row in rows} == expected


@pytest.mark.parametrize("config", [TWO_STREAM, MASKED], ids=["two_stream", "masked"])
def test_summary_rows_add_up_to_every_parameter_of_the_model(config):
    model = build_model(config)

    rows = layer_summary(model)

    assert sum(row["params"] for row in rows) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["two_stream", "masked"])
def test_summary_cli_prints_a_row_per_layer_and_the_total(arch, capsys):
    config = ModelConfig(arch=arch, channels=8, blocks=2)
    total = sum(p.numel() for p in build_model(config).parameters())

    code = model_main(["--summary", "--arch", arch, "--channels", "8", "--blocks", "2"])

    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    assert printed[-1] == f"total parameters: {total:,}"
    layer_names = [line.split()[0] for line in printed[1:-1]]
    assert layer_names == [row["name"] for row in layer_summary(build_model(config))]


def test_summary_cli_reads_a_checkpoint(tmp_path, capsys):
    config = ModelConfig(arch="masked", channels=4, blocks=1)
    model = build_model(config)
    path = save_checkpoint(
        tmp_path / "tiny.pt", {"config": config.to_dict(), "model": model.state_dict()}
    )
    total = sum(p.numel() for p in model.parameters())

    code = model_main(["--summary", "--checkpoint", str(path)])

    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"total parameters: {total:,}"


def test_summary_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    missing = tmp_path / "absent.pt"

    code = model_main(["--summary", "--checkpoint", str(missing)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and str(missing) in err
    assert "Traceback" not in err
