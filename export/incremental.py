"""Cached sampling in ONNX Runtime: a row graph and a pixel graph beside the main model file.

    python -m export.incremental [--checkpoint assets/pixelcnn.pt] [--output assets/pixelcnn.onnx]

writes assets/pixelcnn.row.onnx and assets/pixelcnn.pixel.onnx, checked against PyTorch.
"""

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from engine.checkpoint import load_model
from engine.errors import PixelCNNError

# TODO: running the ONNX graphs needs no torch, but the cache layout and the raster
# bookkeeping come from engine.incremental, which imports it; they belong in a
# torch-free module (as does ModelConfig, see export.runtime)
from engine.incremental import CacheLayout, PixelStep, RasterSession, RowStep, check_two_stream
from export.onnx import write_atomically
from export.runtime import (
    FORMAT,
    FORMAT_VERSION,
    OnnxBackend,
    config_from_metadata,
    create_session,
    decode_metadata,
    open_model,
)

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("assets/pixelcnn.pt")
OPSET = 18
# a graph's inputs and outputs, in the order the step modules take and give them
ROW_INPUTS = ("pixel_rows", "v_ring", "v_order", "h_ring", "h_order")
ROW_OUTPUTS = ("v_row", "above")
PIXEL_INPUTS = ("above", "pixel_left", "context")
PIXEL_OUTPUTS = ("column", "logit")
GRAPHS = {"row": (ROW_INPUTS, ROW_OUTPUTS), "pixel": (PIXEL_INPUTS, PIXEL_OUTPUTS)}
# ONNX Runtime and PyTorch sum in different orders: logits agree to ~1e-6
TOLERANCE = 1e-4
VERIFY_BATCH = 2


def incremental_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    """The row and pixel graphs that belong to a main model file or prefix:
    assets/pixelcnn.onnx -> assets/pixelcnn.row.onnx, assets/pixelcnn.pixel.onnx."""
    path = Path(model_path)
    stem = path.with_suffix("") if path.suffix == ".onnx" else path
    return stem.with_name(stem.name + ".row.onnx"), stem.with_name(stem.name + ".pixel.onnx")


def export_steps(model, opset: int = OPSET) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The row and pixel graphs of a two-stream model, their batch dimension dynamic."""
    layout = CacheLayout.of(model.config)
    row_step, pixel_step = RowStep(model).eval(), PixelStep(model).eval()

    # batch 2 keeps torch.export from specialising N to 1
    N = 2
    row_args = (
        torch.zeros(N, 2, 2, layout.width),
        torch.zeros(layout.v_ring_shape(N)),
        torch.zeros(layout.v_rows - 1, dtype=torch.int64),
        torch.zeros(layout.h_ring_shape(N)),
        torch.zeros(layout.h_rows - 1, dtype=torch.int64),
    )
    pixel_args = (
        torch.zeros(N, layout.above_size),
        torch.zeros(N, 1),
        torch.zeros(layout.context, N, layout.column_size),
    )
    batch = torch.export.Dim("batch")
    row_batch_axes = {"pixel_rows": 0, "v_ring": 1, "v_order": None, "h_ring": 2, "h_order": None}
    pixel_batch_axes = {"above": 0, "pixel_left": 0, "context": 1}

    graphs = []
    for step, args, axes, (inputs, outputs) in (
        (row_step, row_args, row_batch_axes, GRAPHS["row"]),
        (pixel_step, pixel_args, pixel_batch_axes, GRAPHS["pixel"]),
    ):
        dynamic = {name: None if axis is None else {axis: batch} for name, axis in axes.items()}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            # every input's batch axis is the same Dim, which the exporter remarks on
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            program = torch.onnx.export(
                step,
                args,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        graphs.append(program.model_proto)
    return tuple(graphs)


def step_metadata(model, state: dict, source: str, graph: str) -> dict:
    """What a step graph needs to be matched with its main model and run."""
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "architecture": type(model).__name__,
        "graph": f"incremental-{graph}",
        "source_checkpoint": source,
    }
    if state.get("step") is not None:
        metadata["checkpoint_step"] = str(state["step"])
    metadata["config"] = json.dumps(model.config.to_dict(), sort_keys=True)
    return metadata


def with_metadata(proto, metadata: dict, doc: str) -> bytes:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = doc
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


ROW_DOC = (
    "Cached PixelCNN sampling, once per row i: image rows i-2, i-1 and the ring caches in; "
    "the vertical stream's row i and the rows-above part of every horizontal convolution out."
)
PIXEL_DOC = (
    "Cached PixelCNN sampling, once per pixel (i, j): the row graph's column j, x(i, j-1) "
    "and the cached columns left of j in; this pixel's cache column and logit out."
)


@dataclass(frozen=True)
class StepGraphs:
    """Where export_incremental wrote the graphs, and how closely they match PyTorch."""

    row: Path
    pixel: Path
    max_difference: float


def export_incremental(
    source, out: str | os.PathLike | None = None, opset: int = OPSET
) -> StepGraphs:
    """Writes the row and pixel graphs of a checkpoint file or a two-stream model.

    `out` is the main model file (x/model.onnx), a prefix (x/model) or a folder;
    the graphs go to x/model.row.onnx and x/model.pixel.onnx, after a sampling
    run through them has matched PyTorch's full pass within TOLERANCE.
    """
    if isinstance(source, (str, os.PathLike)):
        model, state = load_model(source)
        name, default_stem = Path(source).name, Path(source).with_suffix("")
    else:
        model, state, name, default_stem = source.eval(), {}, "in-memory model", Path("pixelcnn")
    check_two_stream(model)
    prefix = Path(out) if out is not None else default_stem
    if prefix.is_dir():
        prefix = prefix / default_stem.name
    row_path, pixel_path = incremental_paths(prefix)

    row_proto, pixel_proto = export_steps(model, opset)
    row_bytes = with_metadata(row_proto, step_metadata(model, state, name, "row"), ROW_DOC)
    pixel_bytes = with_metadata(pixel_proto, step_metadata(model, state, name, "pixel"), PIXEL_DOC)

    # nothing is written unless the graphs sample what the model samples
    gap = verify_steps(row_bytes, pixel_bytes, model)
    if not gap <= TOLERANCE:  # written this way round, NaN fails too
        raise PixelCNNError(
            f"the cached graphs disagree with PyTorch by {gap:.2e} > {TOLERANCE:.0e}; "
            f"{row_path} and {pixel_path} were not written."
        )
    write_atomically(row_path, row_bytes)
    write_atomically(pixel_path, pixel_bytes)
    log.info("wrote %s and %s (largest logit gap %.2e)", row_path, pixel_path, gap)
    return StepGraphs(row_path, pixel_path, gap)


def check_graph(session: ort.InferenceSession, graph: str, source: str) -> dict:
    """The decoded metadata of a step graph; PixelCNNError if it is not one."""
    metadata = decode_metadata(session.get_modelmeta().custom_metadata_map, source)
    if metadata.get("graph") != f"incremental-{graph}":
        raise PixelCNNError(
            f"{source} is not an incremental {graph} graph; write it with "
            "'python -m export.incremental'."
        )
    inputs, outputs = GRAPHS[graph]
    found = (
        tuple(node.name for node in session.get_inputs()),
        tuple(node.name for node in session.get_outputs()),
    )
    if found != (inputs, outputs):
        raise PixelCNNError(
            f"{source} has inputs and outputs {found}, this program needs {(inputs, outputs)}; "
            "export it again with 'python -m export.incremental'."
        )
    return metadata


class OnnxIncrementalSession(RasterSession):
    """The cached session on ONNX Runtime's CPU provider, caches in numpy.

    Each step feeds views of the caches (no copies of a whole cache) and
    writes the graph's new column or row back in place.
    """

    def __init__(self, row_session, pixel_session, layout: CacheLayout, batch_size: int):
        super().__init__(layout, batch_size)
        self.row_session, self.pixel_session = row_session, pixel_session

    def _allocate(self, batch: int) -> None:
        layout = self.layout
        self.v_ring = np.zeros(layout.v_ring_shape(batch), dtype=np.float32)
        self.h_ring = np.zeros(layout.h_ring_shape(batch), dtype=np.float32)
        self.above = np.zeros(layout.above_shape(batch), dtype=np.float32)

    def _row(self, i: int) -> None:
        layout = self.layout
        feeds = {
            "pixel_rows": self.pixel_rows(i),
            "v_ring": self.v_ring,
            "v_order": layout.ring_order(layout.v_rows, i),
            "h_ring": self.h_ring,
            "h_order": layout.ring_order(layout.h_rows, i),
        }
        v_row, self.above = self.row_session.run(ROW_OUTPUTS, feeds)
        self.v_ring[i % layout.v_rows] = v_row

    def _pixel(self, i: int, j: int) -> np.ndarray:
        slot, kc = i % self.layout.h_rows, self.layout.context
        feeds = {
            "above": self.above[j],
            "pixel_left": np.ascontiguousarray(self.pixel_left(i, j)),
            "context": self.h_ring[slot, j : j + kc],
        }
        column, logit = self.pixel_session.run(PIXEL_OUTPUTS, feeds)
        self.h_ring[slot, j + kc] = column
        return logit

    def _reindex(self, rows: np.ndarray) -> None:
        self.v_ring = np.ascontiguousarray(self.v_ring[:, rows])
        self.h_ring = np.ascontiguousarray(self.h_ring[:, :, rows])
        self.above = np.ascontiguousarray(self.above[:, rows])

    def _release(self) -> None:
        self.v_ring = self.h_ring = self.above = None


class BoundOnnxIncrementalSession(RasterSession):
    """The cached session with every cache on the session's device, through IOBinding.

    Graph inputs and outputs are bound to addresses inside the caches: the
    pixel graph reads its column of `above` and its context columns, and
    writes its new column, in place; only x(i, j-1) goes in and the [N]
    logits come out each step. The caches are laid out so that each of these
    is one contiguous block.

    Tested on the CPU provider, where the same addresses are host memory.
    # TODO: the CUDA path (device "cuda") has not run on a GPU yet: no GPU was
    # available when it was written; run tests/test_incremental_onnx.py there.
    """

    def __init__(
        self, row_session, pixel_session, layout: CacheLayout, batch_size: int, device: str
    ):
        super().__init__(layout, batch_size)
        self.row_session, self.pixel_session = row_session, pixel_session
        self.device = device  # an ONNX Runtime device type: "cuda" or "cpu"
        self._row_binding = row_session.io_binding()
        self._pixel_binding = pixel_session.io_binding()

    def _zeros(self, shape: tuple) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=np.float32), self.device, 0)

    def _allocate(self, batch: int) -> None:
        layout = self.layout
        self.v_ring = self._zeros(layout.v_ring_shape(batch))
        self.h_ring = self._zeros(layout.h_ring_shape(batch))
        self.above = self._zeros(layout.above_shape(batch))
        self._logit = np.zeros(batch, dtype=np.float32)
        self._bind_fixed()

    def _bind_fixed(self) -> None:
        """Bindings that stay put until the caches are replaced."""
        self._row_binding.bind_ortvalue_input("v_ring", self.v_ring)
        self._row_binding.bind_ortvalue_input("h_ring", self.h_ring)
        self._row_binding.bind_ortvalue_output("above", self.above)
        N = len(self._logit)
        self._pixel_binding.bind_output(
            "logit", "cpu", 0, np.float32, (N,), self._logit.ctypes.data
        )

    def _bind(self, binding, name, output, value: ort.OrtValue, offset, shape) -> None:
        """Binds `shape` float32 at `offset` elements into `value`'s memory."""
        bind = binding.bind_output if output else binding.bind_input
        bind(name, self.device, 0, np.float32, shape, value.data_ptr() + 4 * offset)

    def _row(self, i: int) -> None:
        layout, binding = self.layout, self._row_binding
        N = len(self._logit)
        self._keep = (
            self.pixel_rows(i),
            layout.ring_order(layout.v_rows, i),
            layout.ring_order(layout.h_rows, i),
        )
        for name, array in zip(("pixel_rows", "v_order", "h_order"), self._keep, strict=True):
            binding.bind_cpu_input(name, array)

        # this row's vertical inputs go straight into their ring slot
        shape = layout.v_ring_shape(N)[1:]
        slot_size = int(np.prod(shape))
        self._bind(binding, "v_row", True, self.v_ring, (i % layout.v_rows) * slot_size, shape)
        self.row_session.run_with_iobinding(binding)

    def _pixel(self, i: int, j: int) -> np.ndarray:
        layout, binding = self.layout, self._pixel_binding
        N, kc, size = len(self._logit), layout.context, layout.column_size
        width = layout.width + kc

        # column j of `above`; then this row's context columns and the new column
        above_shape = (N, layout.above_size)
        self._bind(binding, "above", False, self.above, j * N * layout.above_size, above_shape)
        self._left = np.ascontiguousarray(self.pixel_left(i, j))
        binding.bind_cpu_input("pixel_left", self._left)
        first = ((i % layout.h_rows) * width + j) * N * size
        if kc:
            self._bind(binding, "context", False, self.h_ring, first, (kc, N, size))
        else:
            self._left_context = np.zeros((0, N, size), dtype=np.float32)
            binding.bind_cpu_input("context", self._left_context)
        self._bind(binding, "column", True, self.h_ring, first + kc * N * size, (N, size))

        self.pixel_session.run_with_iobinding(binding)
        return self._logit.copy()

    def _reindex(self, rows: np.ndarray) -> None:
        # rare (resampling): a round trip through host memory
        def take(value: ort.OrtValue, axis: int) -> ort.OrtValue:
            array = np.ascontiguousarray(np.take(value.numpy(), rows, axis=axis))
            return ort.OrtValue.ortvalue_from_numpy(array, self.device, 0)

        self.v_ring = take(self.v_ring, 1)
        self.h_ring = take(self.h_ring, 2)
        self.above = take(self.above, 1)
        self._logit = np.zeros(len(rows), dtype=np.float32)
        self._bind_fixed()

    def _release(self) -> None:
        self._row_binding.clear_binding_inputs()
        self._row_binding.clear_binding_outputs()
        self._pixel_binding.clear_binding_inputs()
        self._pixel_binding.clear_binding_outputs()
        self.v_ring = self.h_ring = self.above = None


class CachedOnnxBackend(OnnxBackend):
    """The main ONNX model behind the contract, plus its row and pixel graphs.

    `logits` runs the main file; `incremental(batch_size)` makes a cached
    session (engine.backend.IncrementalSession) on the same provider.
    """

    def __init__(self, main: OnnxBackend, row_session, pixel_session, bound: bool | None = None):
        super().__init__(main.session, main.provider, main.path, main.metadata, main.config)
        self.row_session, self.pixel_session = row_session, pixel_session
        self.layout = CacheLayout.of(main.config)
        # on a GPU the caches stay on it; on the CPU plain numpy feeds are as fast
        self.bound = main.provider == "CUDA" if bound is None else bound
        self.name = f"onnx ({main.provider}, cached)"

    def incremental(self, batch_size: int) -> RasterSession:
        # TODO: on CUDA a pixel step launches about a hundred tiny kernels; the
        # pixel graph may run faster on the CPU beside a CUDA row graph: measure
        if self.bound:
            device = "cuda" if self.provider == "CUDA" else "cpu"
            return BoundOnnxIncrementalSession(
                self.row_session, self.pixel_session, self.layout, batch_size, device
            )
        return OnnxIncrementalSession(
            self.row_session, self.pixel_session, self.layout, batch_size
        )


def open_step_sessions(
    model_path, config, device: str, threads: int | None = None, checkpoint_step: int | None = None
):
    """The row and pixel sessions beside `model_path`, checked against its config."""
    sessions = []
    for graph, path in zip(("row", "pixel"), incremental_paths(model_path), strict=True):
        if not path.is_file():
            raise PixelCNNError(
                f"{path} is missing, so cached sampling cannot run; write it with "
                f"'python -m export.incremental --checkpoint <its .pt> --output {model_path}'."
            )
        # a pixel step is a hundred tiny operators: one thread avoids waking others
        session, provider = create_session(path, device, 1 if graph == "pixel" else threads)
        metadata = check_graph(session, graph, str(path))
        if config_from_metadata(metadata, str(path)) != config:
            raise PixelCNNError(
                f"{path} was exported from another model configuration than {model_path}; "
                f"export both from the same checkpoint."
            )
        step = metadata.get("checkpoint_step")
        if None not in (step, checkpoint_step) and step != checkpoint_step:
            raise PixelCNNError(
                f"{path} comes from checkpoint step {step}, {model_path} from step "
                f"{checkpoint_step}; export both from the same checkpoint."
            )
        sessions.append((session, provider))
    return sessions


def open_cached_model(
    path: str | os.PathLike, device: str = "auto", threads: int | None = None
) -> CachedOnnxBackend:
    """Opens a main ONNX model and the row and pixel graphs beside it."""
    main = open_model(path, device, threads)
    if main.config is None or main.config.arch != "two_stream":
        raise PixelCNNError(
            f"{path} holds no two-stream PixelCNN configuration; cached sampling needs one."
        )

    # the steps run where the main model runs, so their caches meet no copies
    step_device = "cuda" if main.provider == "CUDA" else "cpu"
    step = main.metadata.get("checkpoint_step")
    (row, provider), (pixel, _) = open_step_sessions(path, main.config, step_device, threads, step)
    log.info("cached sampling for %s runs on %s", path, provider)
    return CachedOnnxBackend(main, row, pixel)


def verify_steps(row_bytes: bytes, pixel_bytes: bytes, model, seed: int = 0) -> float:
    """Samples VERIFY_BATCH digits with the graphs, then compares every step's
    logit with PyTorch's full pass over the finished digits: the largest gap."""
    layout = CacheLayout.of(model.config)
    row, _ = create_session(row_bytes, "cpu")
    pixel, _ = create_session(pixel_bytes, "cpu", threads=1)
    session = OnnxIncrementalSession(row, pixel, layout, VERIFY_BATCH)

    # logit (i, j) depends only on earlier pixels, so the full pass over the
    # finished images recomputes what every step saw
    rng = np.random.default_rng(seed)
    shape = (VERIFY_BATCH, 1, layout.height, layout.width)
    canvas, uniforms = np.zeros(shape, dtype=np.float32), rng.random(shape)
    step_logits = np.zeros(shape, dtype=np.float32)
    session.start(canvas)
    for i in range(layout.height):
        for j in range(layout.width):
            step_logits[:, 0, i, j] = session.logits_at(i, j)
            probability = 1.0 / (1.0 + np.exp(-step_logits[:, 0, i, j]))
            canvas[:, 0, i, j] = uniforms[:, 0, i, j] < probability
            session.set_pixel(i, j, canvas[:, 0, i, j])
    with torch.no_grad():
        full = model.eval()(torch.from_numpy(canvas)).numpy()
    return float(np.abs(full - step_logits).max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.incremental", description=__doc__)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--output", help="the main .onnx file (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # the exporter warns about every torchvision operator it cannot register
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    checkpoint = Path(args.checkpoint)
    output = Path(args.output) if args.output else checkpoint.with_suffix(".onnx")
    try:
        graphs = export_incremental(checkpoint, output)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"cached sampling matches PyTorch's full pass to {graphs.max_difference:.2e} "
        f"(tolerance {TOLERANCE:.0e})"
    )
    print(f"wrote {graphs.row} and {graphs.pixel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
