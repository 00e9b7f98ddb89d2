"""ONNX export of trained models, for runtimes without PyTorch (drones, robots, C++ or mobile services).

``crackcascade export CHECKPOINT OUTPUT.onnx`` writes one ONNX file and a JSON file beside it
(``OUTPUT.json``, the same metadata is embedded in the ONNX file as ``metadata_props``). The
output path is checked before the export starts (:func:`check_output`): an existing ONNX file or
JSON is replaced only with ``--overwrite``, and a folder that cannot be written is named at once.

* a :class:`~crackcascade.models.multitask.MultiTaskClassifier` becomes a graph with input
  ``image`` ``(batch, 3, S, S)`` at its training size ``S`` and one output per trained head,
  named by task, with that head's logits ``(batch, classes)`` (softmax gives the probabilities
  ``predict`` reports);
* a :class:`~crackcascade.models.segmenter.CrackSegmenter` becomes a graph with input ``image``
  ``(batch, 3, height, width)`` of any height and width of at least :data:`MIN_SIDE` pixels and
  output ``logits`` ``(batch, classes, height, width)``; ``sigmoid(logits) >= threshold`` (the
  thresholds chosen on validation, in the metadata) is the mask.

Both take RGB images as the PyTorch modules do, ``uint8`` 0-255 by default (``--input-dtype
float32`` for floats 0-255): normalization with the model's mean and std is part of the graph,
and so is the U-Net's reflection padding to a multiple of 32 and the crop back, so a runtime
feeds decoded pixels and reads logits at the input's size. Tiling of large photos, test-time
flips and the cascade's routing and gating stay with the caller (see ``predict_tiled`` in
:mod:`crackcascade.tiling` and :class:`~crackcascade.models.cascade.CrackCascade`).

The graphs are made by ``torch.onnx.export(..., dynamo=True)``, torch's default exporter since
2.9 (it traces with ``torch.export`` and writes the ONNX graph with onnxscript); the legacy
TorchScript exporter is deprecated and not used.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

import crackcascade
from crackcascade.checkpoints.reading import checkpoint_kind, read_lightning_checkpoint, resolve_checkpoint
from crackcascade.checkpoints.restore import classifier_from_checkpoint, restore_model
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
_DTYPES: dict[str, torch.dtype] = {"uint8": torch.uint8, "float32": torch.float32}


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


def _require_onnx() -> Any:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter writes the graph with it)
    except ImportError as err:
        raise ConfigError(
            f"crackcascade export needs onnx and onnxscript ({err.name} is not installed); "
            "pip install 'crackcascade[export]'"
        ) from None
    return onnx


def _check_options(opset: int, input_dtype: str) -> None:
    if opset < DEFAULT_OPSET:
        raise ConfigError(f"--opset must be >= {DEFAULT_OPSET} (the exporter's lowest), got {opset}")
    if input_dtype not in _DTYPES:
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
    _check_options(opset, input_dtype)
    if image_size < 16:
        raise ConfigError(f"--image-size must be >= 16, got {image_size}")
    chosen = list(classifier.tasks if tasks is None else tasks)
    unknown = [t for t in chosen if t not in classifier.tasks]
    if not chosen or unknown:
        raise ConfigError(f"no head for task(s) {unknown or chosen}; the classifier has {list(classifier.tasks)}")
    onnx = _require_onnx()
    path = Path(path)
    check_output(path, overwrite=True)
    example = _example((2, 3, image_size, image_size), input_dtype)
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
    _check_options(opset, input_dtype)
    onnx = _require_onnx()
    path = Path(path)
    check_output(path, overwrite=True)
    # An example that needs padding on both sides, so the traced graph pads and crops.
    example = _example((2, 3, 2 * MIN_SIDE + 5, 2 * MIN_SIDE + 11), input_dtype)
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


def _example(shape: tuple[int, ...], dtype: str) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, shape, generator=generator).to(_DTYPES[dtype])


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
    onnx = _require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return cast(dict[str, Any], json.loads(prop.value))
    raise WeightsError(f"{path}: has no crackcascade metadata; export it with `crackcascade export`")


# ---- checkpoints --------------------------------------------------------------------------------


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    input_dtype: InputDtype = "uint8",
    overwrite: bool = False,
) -> ExportResult:
    """Export the model of a Lightning checkpoint, a classifier or a U-Net (told apart by its hyper-parameters).

    Args:
        checkpoint: ``.ckpt`` file of a :class:`MultiTaskClassifier` or :class:`CrackSegmenter`;
            a glob picks the newest match.
        output: ONNX file to write; the metadata goes to the same name with ``.json``.
        image_size: Classifier input side; None takes the training ``image_size`` saved in the
            checkpoint (else 224). Not for U-Nets, which take any size.
        opset: ONNX opset (>= 18).
        input_dtype: ``uint8`` or ``float32`` (both 0-255).
        overwrite: Replace an existing ``output`` and its ``.json`` (else they are refused).

    Raises:
        WeightsError: If the checkpoint is missing, unreadable or of another model.
        ConfigError: For an option that does not apply or cannot work, or an output that exists
            (without ``overwrite``) or cannot be written (see :func:`check_output`), before exporting.
    """
    start = time.perf_counter()
    output = Path(output)
    check_output(output, overwrite)
    path = resolve_checkpoint(checkpoint, "checkpoint")
    state = read_lightning_checkpoint(path, "checkpoint")
    kind = checkpoint_kind(state)
    module: nn.Module
    if kind.startswith("classifier"):
        classifier = classifier_from_checkpoint(state, path, (), "checkpoint")
        # Only the heads that were trained: an untrained head's logits would look like answers.
        trained = set(state.get("crackcascade_trained_tasks", classifier.tasks))
        tasks = [t for t in classifier.tasks if t in trained]
        trained_size = (state.get("datamodule_hyper_parameters") or {}).get("image_size")
        size = int(image_size or trained_size or 224)
        metadata = export_classifier(
            classifier, output, tasks=tasks, image_size=size, opset=opset, input_dtype=input_dtype
        )
        module = ClassifierGraph(classifier, tasks)
    elif kind.startswith("U-Net"):
        if image_size is not None:
            raise ConfigError("--image-size applies to classifiers; an exported U-Net takes any height and width")
        module = cast(CrackSegmenter, restore_model(CrackSegmenter, path, state, "checkpoint"))
        metadata = export_segmenter(module, output, opset=opset, input_dtype=input_dtype)
    else:
        raise WeightsError(f"checkpoint: '{path}' holds a {kind}, not a MultiTaskClassifier or CrackSegmenter")
    metadata_path = output.with_suffix(".json")
    # The source is recorded in the JSON only: the ONNX file stays the same wherever the checkpoint was.
    metadata = {**metadata, "checkpoint": str(path)}
    metadata_path.write_text(json.dumps(metadata, indent=1) + "\n")
    return ExportResult(output, metadata_path, metadata, module, time.perf_counter() - start)


# ---- parity ---------------------------------------------------------------------------------------


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of an exported model.

    Args:
        path: The ONNX file.
        threads: Intra-op threads; None lets onnxruntime choose.

    Raises:
        ConfigError: If onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("onnxruntime is not installed; pip install 'crackcascade[export]'") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_outputs(module: nn.Module, images: Tensor) -> list[np.ndarray]:
    """The outputs of an exported module (:class:`ClassifierGraph` or a U-Net) for ``images``, as arrays."""
    with torch.inference_mode():
        out = module.eval()(images)
    return [o.float().numpy() for o in (out if isinstance(out, tuple) else (out,))]


def check_parity(
    module: nn.Module,
    session: Any,
    images: Tensor,
    metadata: dict[str, Any],
    atol: float = MAX_ABS_DIFF,
    rtol: float = 0.0,
) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on the same images.

    Args:
        module: The exported module (see :attr:`ExportResult.module`).
        session: An onnxruntime session of the export (:func:`onnx_session`).
        images: Input batch of the export's dtype and shape.
        metadata: The export's metadata (names the outputs).
        atol: Largest absolute difference accepted.
        rtol: Further difference accepted per unit of the output's largest absolute PyTorch value:
            float32 sums taken in another order differ in proportion to the activations, so a
            deep network with logits in the tens differs by more than 1e-4 even where a logit is
            near 0 (a random ResNet-34 U-Net at 256x256: logits up to 104, differences up to 1.3e-3).

    Raises:
        WeightsError: If an output differs by more than ``atol + rtol * max|pytorch output|``, or the shapes differ.
    """
    names = [o["name"] for o in metadata["outputs"]]
    got = session.run(names, {"image": images.numpy()})
    want = torch_outputs(module, images)
    worst = 0.0
    for name, a, b in zip(names, got, want, strict=True):
        if a.shape != b.shape:
            raise WeightsError(f"exported output '{name}' has shape {a.shape}, PyTorch gives {b.shape}")
        if not a.size:
            continue
        difference = float(np.abs(a - b).max())
        worst = max(worst, difference)
        limit = atol + rtol * float(np.abs(b).max())
        if difference > limit:
            raise WeightsError(
                f"exported output '{name}' differs from PyTorch by {difference:.3g} on the same input "
                f"(more than {limit:.3g})"
            )
    return worst


def _parity_inputs(metadata: dict[str, Any]) -> list[Tensor]:
    dtype = metadata["input"]["dtype"]
    if metadata["kind"] == "classifier":
        size = metadata["image_size"]
        return [_example((3, 3, size, size), dtype)]
    side = metadata["min_side"]
    # Two sizes that are not multiples of 32, so both the padding and the crop are checked.
    return [_example((1, 3, 2 * side + 7, 3 * side - 5), dtype), _example((2, 3, side + 13, side + 1), dtype)]


def verify_export(result: ExportResult, threads: int | None = None, rtol: float = VERIFY_RTOL) -> float:
    """Run an export in onnxruntime and PyTorch on random images; return the largest absolute difference.

    Raises:
        WeightsError: If an output differs by more than ``MAX_ABS_DIFF + rtol * max|output|``.
    """
    session = onnx_session(result.onnx_path, threads)
    inputs = _parity_inputs(result.metadata)
    return max(check_parity(result.module, session, x, result.metadata, rtol=rtol) for x in inputs)


# ---- command line ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``crackcascade export CHECKPOINT OUTPUT.onnx``.

    Args:
        argv: Arguments after ``export``.

    Returns:
        0 on success (bad arguments exit with status 2, as argparse does; crackcascade errors
        are printed as one line by :func:`crackcascade.cli.main`).
    """
    parser = argparse.ArgumentParser(
        prog="crackcascade export",
        description=(
            "Export a classifier or U-Net checkpoint to ONNX (with a .json of class names, thresholds and "
            "input size beside it), then check it against PyTorch with onnxruntime."
        ),
    )
    add = parser.add_argument
    add("checkpoint", help="a MultiTaskClassifier or CrackSegmenter .ckpt (a glob picks the newest)")
    add("output", type=Path, help="ONNX file to write, e.g. exports/classifier.onnx")
    add("--image-size", type=int, metavar="PX", help="classifier input side (default: its training size, else 224)")
    add("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    add("--input-dtype", choices=tuple(_DTYPES), default="uint8", help="input pixels, 0-255 (default: uint8)")
    add("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    add("--overwrite", action="store_true", help="replace OUTPUT and its .json if they exist (default: refuse)")
    args = parser.parse_args(argv)
    result = export_checkpoint(
        args.checkpoint,
        args.output,
        image_size=args.image_size,
        opset=args.opset,
        input_dtype=args.input_dtype,
        overwrite=args.overwrite,
    )
    meta = result.metadata
    outputs = ", ".join(o["name"] for o in meta["outputs"])
    shape = "x".join(str(s) for s in meta["input"]["shape"])
    print(
        f"exported the {meta['kind']} to {result.onnx_path} in {result.seconds:.1f} s "
        f"(input image {meta['input']['dtype']} {shape}; outputs {outputs}); metadata in {result.metadata_path}"
    )
    if not args.no_verify:
        worst = verify_export(result)
        print(f"onnxruntime matches PyTorch: max |difference| {worst:.2g} on random images")
    return 0
