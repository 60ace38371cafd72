"""The configuration of a network: everything needed to rebuild it.

Torch-free, so an ONNX file's metadata can be read back into it without
importing torch. Saved in every checkpoint and every exported model.
"""

from dataclasses import asdict, dataclass, fields

from engine.errors import PixelCNNError

ARCHITECTURES = ("two_stream", "masked")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; saved in every checkpoint."""

    arch: str = "two_stream"
    channels: int = 48
    blocks: int = 5
    v_kernel: tuple[int, int] = (2, 3)  # vertical stream, down-shifted
    h_kernel: tuple[int, int] = (2, 2)  # horizontal stream, down-right-shifted
    first_kernel: int = 7  # masked model: the mask-A layer
    masked_kernel: int = 3  # masked model: every mask-B layer
    dropout: float = 0.0

    def __post_init__(self):
        # tuples come back from a checkpoint or JSON as lists
        object.__setattr__(self, "v_kernel", tuple(self.v_kernel))
        object.__setattr__(self, "h_kernel", tuple(self.h_kernel))
        self.validate()

    def validate(self):
        if self.arch not in ARCHITECTURES:
            raise PixelCNNError(
                f"architecture '{self.arch}' is unknown; use one of {ARCHITECTURES}."
            )
        if not 1 <= self.channels <= 1024:
            raise PixelCNNError(f"channels must be between 1 and 1024, got {self.channels}.")
        if not 0 <= self.blocks <= 64:
            raise PixelCNNError(f"blocks must be between 0 and 64, got {self.blocks}.")
        if not 0.0 <= self.dropout < 1.0:
            raise PixelCNNError(f"dropout must be in [0, 1), got {self.dropout}.")
        vh, vw = self.v_kernel
        hh, hw = self.h_kernel
        if vh < 1 or vw < 1 or vw % 2 == 0:
            raise PixelCNNError(f"v_kernel {self.v_kernel} needs positive sizes and an odd width.")
        if hh < 1 or hw < 1:
            raise PixelCNNError(f"h_kernel {self.h_kernel} needs positive sizes.")
        for name in ("first_kernel", "masked_kernel"):
            size = getattr(self, name)
            if size < 1 or size % 2 == 0:
                raise PixelCNNError(f"{name} must be a positive odd number, got {size}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        if not isinstance(values, dict):
            raise PixelCNNError(
                f"model configuration must be a dict of fields, got {type(values).__name__}."
            )
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise PixelCNNError(f"model configuration has unknown fields {sorted(unknown)}.")
        try:
            return cls(**values)
        except TypeError as error:
            raise PixelCNNError(f"model configuration is malformed: {error}") from error
