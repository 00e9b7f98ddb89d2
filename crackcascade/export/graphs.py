"""The ONNX graphs of a classifier and a U-Net, with their metadata embedded (see :mod:`crackcascade.export`)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

import crackcascade
from crackcascade.errors import ConfigError, WeightsError, first_line
from crackcascade.labels import get_task
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.segmenter import CrackSegmenter
from crackcascade.tiling import PAD_MULTIPLE

InputDtype = Literal["uint8", "float32"]
DEFAULT_OPSET = 18
"""ONNX opset written by default; the dynamo exporter needs at least 18."""
MIN_SIDE = PAD_MULTIPLE
"""Smallest image side the exported U-Net takes: its padding is by reflection, which needs more
pixels than it pads (the PyTorch module falls back to edge replication below that)."""
METADATA_KEY = "crackcascade"
"""Key of the JSON metadata in the ONNX file's ``metadata_props``."""
MAX_ABS_DIFF = 1e-4
"""Largest difference between onnxruntime and PyTorch outputs that :func:`check_parity` accepts."""
VERIFY_RTOL = 1e-4
"""Relative part of the tolerance of ``crackcascade export``'s own check (see :func:`check_parity`)."""
INPUT_DTYPES: dict[str, torch.dtype] = {"uint8": torch.uint8, "float32": torch.float32}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote.

    Attributes:
        onnx_path: The ONNX model.
        metadata_path: The JSON metadata beside it (also embedded in the model).
        metadata: The metadata itself.
        module: The PyTorch module that was exported (for a classifier a :class:`ClassifierGraph`),
            whose outputs are the ONNX model's, in the same order.
        seconds: Time the export took.
    """

    onnx_path: Path
    metadata_path: Path
    metadata: dict[str, Any]
    module: nn.Module
    seconds: float


class ClassifierGraph(nn.Module):
    """A classifier as exported: images in, one logits tensor per head out (a tuple, in ``tasks`` order)."""

    def __init__(self, classifier: MultiTaskClassifier, tasks: Sequence[str]) -> None:
        super().__init__()
        self.classifier = classifier
        self.tasks = tuple(tasks)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Logits of every exported head for ``(B, 3, S, S)`` images (``uint8`` or float 0-255)."""
        logits = self.classifier(images)
        return tuple(logits[task] for task in self.tasks)


def require_onnx() -> Any:
    """The ``onnx`` module (with onnxscript, which the exporter writes graphs with), or a one-line error."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter writes the graph with it)
    except ImportError as err:
        raise ConfigError(
            f"crackcascade export needs onnx and onnxscript ({err.name} is not installed); "
            "pip install 'crackcascade[export]'"
        ) from None
    return onnx


def check_options(opset: int, input_dtype: str) -> None:
    """Refuse an opset below :data:`DEFAULT_OPSET` or an unknown input dtype, with one line naming the option."""
    if opset < DEFAULT_OPSET:
        raise ConfigError(f"--opset must be >= {DEFAULT_OPSET} (the exporter's lowest), got {opset}")
    if input_dtype not in INPUT_DTYPES:
        raise ConfigError(f"--input-dtype must be uint8 or float32, got {input_dtype!r}")


def check_output(path: Path, overwrite: bool = False) -> None:
    """Make sure the export can be written to ``path`` before minutes are spent exporting.

    Creates the missing folders and writes (and removes) a probe file in the folder.

    Args:
        path: The ONNX file; its metadata goes beside it as ``.json``.
        overwrite: Replace an existing ONNX file and its ``.json``; without it they are refused.

    Raises:
        ConfigError: One line naming the path: not ``.onnx``, an existing file (without
            ``overwrite``) or folder, a file where a folder should be, or a folder that cannot be written.
    """
    if path.suffix != ".onnx":
        raise ConfigError(f"output '{path}' must end in .onnx (the metadata is written beside it as .json)")
    for target in (path, path.with_suffix(".json")):
        if target.is_dir():
            raise ConfigError(f"output '{path}': {target} is a folder; name a file, e.g. {target / 'model.onnx'}")
        if target.exists() and not overwrite:
            raise ConfigError(
                f"output '{path}': {target} exists; pass --overwrite to replace it, or choose another name"
            )
    blocker = next((a for a in path.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"output '{path}': {blocker} is a file, not a folder; choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".crackcascade-export-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"output '{path}': cannot write in {path.parent} ({err.strerror or first_line(err)}); choose another path"
        ) from None


def _input_info(dtype: str, shape: list[int | str], mean: Tensor, std: Tensor) -> dict[str, Any]:
    return {
        "name": "image",
        "dtype": dtype,
        "shape": shape,
        "layout": "NCHW, RGB",
        "range": [0, 255],
        # In the 0-255 units of the input; applied inside the graph, listed for reference only.
        "normalization": {
            "mean": [round(float(v), 6) for v in mean.flatten()],
            "std": [round(float(v), 6) for v in std.flatten()],
            "in_graph": True,
        },
    }


def _export(
    module: nn.Module, example: Tensor, path: Path, output_names: list[str], dims: dict[int, str], opset: int
) -> None:
    """Export with the dynamo exporter, weights inside the one file (a drone copies a single file).

    Args:
        module: The module to export.
        example: An input it is traced with.
        path: The ONNX file.
        output_names: Names of the module's outputs, in order.
        dims: Input axis -> name of each dynamic axis, e.g. ``{0: "batch"}``.
        opset: ONNX opset.
    """
    module.eval()
    # Dim.DYNAMIC rather than named Dims: the U-Net's padding to a multiple of 32 yields sizes
    # like h + (-h mod 32) whose guards torch.export cannot state as ranges of a named Dim (it
    # fails to export); DYNAMIC records them as they are and keeps the axes dynamic.
    shapes = ({axis: torch.export.Dim.DYNAMIC for axis in dims},)
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=output_names,
            dynamic_shapes=shapes,
            opset_version=opset,
            optimize=True,
            external_data=False,
            verbose=False,  # no progress lines on stdout
        )
    if program is None:  # the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def _name_dims(model: Any, dims: dict[int, str]) -> None:
    """Give the dynamic axes of an ``onnx.ModelProto`` readable names (``batch``...) for the exporter's ``s34``."""
    (image,) = model.graph.input
    names = {}
    for axis, name in dims.items():
        dim = image.type.tensor_type.shape.dim[axis]
        names[dim.dim_param or name] = name
    for value in (*model.graph.input, *model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def export_classifier(
    classifier: MultiTaskClassifier,
    path: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    image_size: int = 224,
    opset: int = DEFAULT_OPSET,
    input_dtype: InputDtype = "uint8",
) -> dict[str, Any]:
    """Export a classifier to ONNX: dynamic batch, one named output per head.

    Args:
        classifier: The classifier (put in evaluation mode).
        path: ONNX file to write (its folder is created; an existing file is replaced).
        tasks: Heads to export, in this order; None for every head the classifier has.
        image_size: Side of the square input (the training size; the cascade resizes photos to it).
        opset: ONNX opset (>= 18).
        input_dtype: ``uint8`` or ``float32`` (both 0-255).

    Returns:
        The metadata, also embedded in the file (see :func:`write_metadata`).
    """
    check_options(opset, input_dtype)
    if image_size < 16:
        raise ConfigError(f"--image-size must be >= 16, got {image_size}")
    chosen = list(classifier.tasks if tasks is None else tasks)
    unknown = [t for t in chosen if t not in classifier.tasks]
    if not chosen or unknown:
        raise ConfigError(f"no head for task(s) {unknown or chosen}; the classifier has {list(classifier.tasks)}")
    onnx = require_onnx()
    path = Path(path)
    check_output(path, overwrite=True)
    example = example_images((2, 3, image_size, image_size), input_dtype)
    _export(ClassifierGraph(classifier.eval(), chosen), example, path, chosen, {0: "batch"}, opset)
    metadata = {
        "kind": "classifier",
        "backbone": classifier.hparams["backbone"],
        "input": _input_info(input_dtype, ["batch", 3, image_size, image_size], classifier.mean, classifier.std),
        "image_size": image_size,
        "outputs": [
            {
                "name": t,
                "shape": ["batch", get_task(t).num_classes],
                "kind": "logits",
                "classes": list(get_task(t).classes),
            }
            for t in chosen
        ],
    }
    return _finish(onnx, path, metadata, opset, {0: "batch"})


def export_segmenter(
    segmenter: CrackSegmenter,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    input_dtype: InputDtype = "uint8",
) -> dict[str, Any]:
    """Export a U-Net to ONNX: dynamic batch, height and width; padding and crop inside the graph.

    Args:
        segmenter: The U-Net (put in evaluation mode).
        path: ONNX file to write (its folder is created; an existing file is replaced).
        opset: ONNX opset (>= 18).
        input_dtype: ``uint8`` or ``float32`` (both 0-255).

    Returns:
        The metadata, also embedded in the file (see :func:`write_metadata`).
    """
    check_options(opset, input_dtype)
    onnx = require_onnx()
    path = Path(path)
    check_output(path, overwrite=True)
    # An example that needs padding on both sides, so the traced graph pads and crops.
    example = example_images((2, 3, 2 * MIN_SIDE + 5, 2 * MIN_SIDE + 11), input_dtype)
    dims = {0: "batch", 2: "height", 3: "width"}
    _export(segmenter.eval(), example, path, ["logits"], dims, opset)
    classes = list(segmenter.classes)
    hp = segmenter.hparams
    metadata = {
        "kind": "segmenter",
        "encoder": hp["encoder_name"],
        "input": _input_info(input_dtype, ["batch", 3, "height", "width"], segmenter.mean, segmenter.std),
        "min_side": MIN_SIDE,
        "outputs": [
            {
                "name": "logits",
                "shape": ["batch", len(classes), "height", "width"],
                "kind": "logits",
                "classes": classes,
            }
        ],
        "classes": classes,
        # Channel i is class classes[i] (mask value i + 1): sigmoid(logits) >= its threshold.
        "thresholds": {name: round(float(t), 6) for name, t in zip(classes, segmenter.threshold.tolist(), strict=True)},
        "tiling": {"tile_size": hp["tile_size"], "tile_overlap": hp["tile_overlap"]},
    }
    return _finish(onnx, path, metadata, opset, dims)


def example_images(shape: tuple[int, ...], dtype: str) -> Tensor:
    """Seeded random 0-255 images of a shape and an input dtype (``uint8``, ``float32``)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, shape, generator=generator).to(INPUT_DTYPES[dtype])


def _finish(onnx: Any, path: Path, metadata: dict[str, Any], opset: int, dims: dict[int, str]) -> dict[str, Any]:
    """Name the dynamic axes, embed the metadata, check the model and write the JSON beside it."""
    model = onnx.load(str(path))
    _name_dims(model, dims)
    metadata = {
        **metadata,
        "format": "onnx",
        "opset": opset,
        "crackcascade_version": crackcascade.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    write_metadata(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


def write_metadata(model: Any, metadata: dict[str, Any]) -> None:
    """Embed ``metadata`` as JSON under :data:`METADATA_KEY` in an ``onnx.ModelProto``'s ``metadata_props``.

    onnxruntime returns it as ``session.get_modelmeta().custom_metadata_map["crackcascade"]``.
    """
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The crackcascade metadata embedded in an exported ONNX file (see :func:`write_metadata`)."""
    onnx = require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return cast(dict[str, Any], json.loads(prop.value))
    raise WeightsError(f"{path}: has no crackcascade metadata; export it with `crackcascade export`")
