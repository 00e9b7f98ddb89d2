"""``crackcascade export CHECKPOINT OUTPUT.onnx``: a checkpoint's model to ONNX, checked against PyTorch."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from torch import nn

from crackcascade.checkpoints.reading import checkpoint_kind, read_lightning_checkpoint, resolve_checkpoint
from crackcascade.checkpoints.restore import classifier_from_checkpoint, restore_model
from crackcascade.errors import ConfigError, WeightsError
from crackcascade.export.graphs import (
    DEFAULT_OPSET,
    INPUT_DTYPES,
    ClassifierGraph,
    ExportResult,
    InputDtype,
    check_output,
    export_classifier,
    export_segmenter,
)
from crackcascade.export.parity import verify_export
from crackcascade.models.segmenter import CrackSegmenter


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
    add("--input-dtype", choices=tuple(INPUT_DTYPES), default="uint8", help="input pixels, 0-255 (default: uint8)")
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
