"""A trained model as a deployable graph: ONNX (through torch.export) or TorchScript.

The graph takes a float32 batch ``images`` (N x 3 x H x W, N free) already resized to the
model's input size and normalised ((pixel / 255 - mean) / std, the model file's settings) and
returns ``features`` (N x D float32), flip-averaged inside the graph when the model's
experiment flip-averages: the same numbers as `FeatureExtractor` gives for those images.
Decoding and resizing stay outside the graph (`docs/inference.md`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..io import atomic_path, write_failure
from ..models.file import InputSettings, ModelFile

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
# The batch the graph is traced with: not 1, which torch.export would specialise the batch axis to.
EXAMPLE_BATCH = 2


class ExportError(RuntimeError):
    """The model could not be exported (a missing exporter package, an operator without a translation)."""


class FeatureGraph(nn.Module):
    """Normalised images -> test features: the network's embedding, averaged with its mirror's if `flip`."""

    def __init__(self, model: nn.Module, flip: bool):
        super().__init__()
        self.model = model
        self.flip = flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.flip:
            return self.model(images).embedding()
        n = images.shape[0]
        emb = self.model(torch.cat([images, images.flip(3)])).embedding()
        return (emb[:n] + emb[n:]) / 2


class _WindowMaxPool(nn.Module):
    """`nn.AdaptiveMaxPool2d` for a fixed input size, as slices and maxima (ONNX has no adaptive max pool).

    Window i of n over a length L spans [floor(i L / n), ceil((i + 1) L / n)), as torch's does,
    so the maxima are the same numbers.
    """

    def __init__(self, output_size: tuple[int, int]):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out_h, out_w), (h, w) = self.output_size, x.shape[-2:]
        rows = []
        for i in range(out_h):
            top, bottom = (i * h) // out_h, math.ceil((i + 1) * h / out_h)
            cols = [x[..., top:bottom, (j * w) // out_w:math.ceil((j + 1) * w / out_w)].amax(dim=(-2, -1))
                    for j in range(out_w)]
            rows.append(torch.stack(cols, dim=-1))
        return torch.stack(rows, dim=-2)


def _exportable(model: nn.Module) -> nn.Module:
    """A copy of `model` whose adaptive max pools with more than one output cell are `_WindowMaxPool`s."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.AdaptiveMaxPool2d):
                size = child.output_size
                size = (size, size) if isinstance(size, int) else tuple(size)
                if size != (1, 1) and None not in size:
                    setattr(module, name, _WindowMaxPool(size))  # type: ignore[arg-type]
    return model


def feature_graph(model_file: ModelFile, inputs: InputSettings) -> FeatureGraph:
    """The module that is exported, in eval mode on the CPU."""
    return FeatureGraph(_exportable(model_file.build()), inputs.flip).eval()


def graph_metadata(model_path: str | os.PathLike[str], model_file: ModelFile, inputs: InputSettings,
                   feature_dim: int) -> dict[str, str]:
    """What an ONNX file records about its input and output (its metadata_props)."""
    return {
        "clusteralign.model": os.fspath(model_path),
        "clusteralign.input": json.dumps(inputs.to_meta(), sort_keys=True),
        "clusteralign.feature_dim": str(feature_dim),
        "clusteralign.family": model_file.model_cfg.family,
        "clusteralign.backbone": model_file.model_cfg.backbone,
    }


def export_model(model_path: str | os.PathLike[str], fmt: Format, out: str | os.PathLike[str], *,
                 input_size: tuple[int, int] | None = None, flip: bool | None = None) -> InputSettings:
    """Write `model_path`'s feature graph to `out` (atomically); returns the input settings it takes.

    `input_size` and `flip` replace the settings the model file records, as for `FeatureExtractor`.
    """
    from .extractor import model_inputs

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    model_file = ModelFile.load(model_path)
    inputs = model_inputs(model_file, model_path, input_size, flip)
    graph = feature_graph(model_file, inputs)
    example = torch.zeros(EXAMPLE_BATCH, 3, inputs.height, inputs.width)
    with torch.no_grad():
        feature_dim = int(graph(example).shape[1])
    try:
        if fmt == "onnx":
            _export_onnx(graph, example, Path(out), graph_metadata(model_path, model_file, inputs, feature_dim))
        else:
            _export_torchscript(graph, example, Path(out))
    except OSError as err:
        # Else the message names the temporary file beside `out`.
        raise ExportError(f"{out}: cannot be written ({write_failure(out, err)})") from None
    return inputs


def _export_onnx(graph: FeatureGraph, example: torch.Tensor, out: Path, metadata: dict[str, str]) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  torch's exporter needs it; a clear message beats its ImportError
    except ImportError as err:
        raise ExportError(f"ONNX export needs the packages onnx and onnxscript ({err}); install them with "
                          "pip install onnx onnxscript, or the package's `deploy` extra") from None
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on the graph, not about the user's model
        try:
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["images"],
                                        output_names=["features"], dynamic_shapes={"images": {0: batch}},
                                        external_data=False, verbose=False)
        except Exception as err:  # noqa: BLE001 - torch.export raises many kinds; the message names the operator
            raise ExportError(f"ONNX export failed: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    with atomic_path(out) as tmp:
        program.save(os.fspath(tmp))
        model = onnx.load(os.fspath(tmp))
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(model)
        onnx.save(model, os.fspath(tmp))


def _export_torchscript(graph: FeatureGraph, example: torch.Tensor, out: Path) -> None:
    # torch deprecates TorchScript; tracing still works, and the file loads in C++ (libtorch).
    with warnings.catch_warnings(), atomic_path(out) as tmp:
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(graph, example), os.fspath(tmp))
