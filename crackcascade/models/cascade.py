"""The cascade of Bai et al. (2020): the classifier routes each photo to a U-Net and gates whether it runs.

For every photo the :class:`~crackcascade.models.multitask.MultiTaskClassifier` looks at a
resized copy; its scene-level head picks the scale (and with it the U-Net, when there is one per
scale) and a gate (by default the damage-type head saying flexural, shear or combined) decides
whether the :class:`~crackcascade.models.segmenter.CrackSegmenter` segments the photo at native
resolution, by tiles.

``test`` scores each scale both ways on the same photos, ungated (every photo segmented, as a
U-Net alone) and gated (the cascade), and prints and saves the table. ``predict`` returns, per
photo, the eight task predictions, the gate decision, the crack mask and its measurements.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from crackcascade.checkpoints import load_checkpoint
from crackcascade.data.cracks import MASK_IGNORE
from crackcascade.data.sampling import has_samples
from crackcascade.errors import ConfigError, WeightsError, first_line
from crackcascade.labels import CRACK, CRACK_DAMAGE_TYPES, SCALES, TASKS, get_task, normalize_name
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.segmenter import CrackSegmenter, attached_datamodule, names_on_all_ranks, unupdated_metrics_ok

Batch = dict[str, Any]

MODES: tuple[str, ...] = ("ungated", "gated")
"""The two ways every test photo is scored: U-Net on every photo, and the cascade."""

COUNTS: tuple[str, ...] = (
    "images",
    "ran",  # photos the U-Net segmented
    "tp",  # image level: crack present and found
    "fp",
    "fn",
    "tn",
    "located",  # localization correct (see CascadeMetrics)
    "pixel_tp",
    "pixel_fp",
    "pixel_fn",
)
"""Counters of :class:`CascadeMetrics`, summed over photos (and DDP ranks)."""

SCORE_COLUMNS: tuple[str, ...] = (
    "images",
    "ran",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "localization",
    "pixel_iou",
    "pixel_f1",
    "ms_per_image",
)
"""Columns of the evaluation table, after ``scale`` and ``mode``."""


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


class CascadeMetrics(Metric):
    """Image-level crack detection, the paper's localization accuracy and pixel scores of one scale and mode.

    A photo *has* a crack when its true mask has any crack pixel; the model *found* one when its
    mask has at least ``min_pixels`` crack pixels (fewer are noise, and count as nothing masked).
    Localization is correct, as in Bai et al. (2020), when the photo is crack-free and nothing is
    masked, or it has a crack and the predicted mask overlaps it with IoU >= ``iou_threshold``.
    Pixel IoU and F1 sum the pixels of all photos. Time is seconds of model work per photo.

    Args:
        iou_threshold: IoU a cracked photo's mask needs to count as located.
        min_pixels: Fewest crack pixels that count as a crack found.
    """

    full_state_update = False
    counts: Tensor
    seconds: Tensor

    def __init__(self, iou_threshold: float = 0.3, min_pixels: int = 10) -> None:
        super().__init__()
        self.iou_threshold = iou_threshold
        self.min_pixels = min_pixels
        self.add_state("counts", torch.zeros(len(COUNTS), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("seconds", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, truth: Tensor, ran: bool, seconds: float) -> None:
        """Add one photo.

        Args:
            predicted: ``(H, W)`` bool, the crack pixels this mode masked (all False if it did not run).
            truth: ``(H, W)`` bool, the true crack pixels.
            ran: Whether the U-Net segmented the photo in this mode.
            seconds: Model time spent on the photo in this mode.
        """
        tp = int((predicted & truth).sum())
        fp = int((predicted & ~truth).sum())
        fn = int((~predicted & truth).sum())
        has, found = bool(truth.any()), int(predicted.sum()) >= self.min_pixels
        located = found and _ratio(tp, tp + fp + fn) >= self.iou_threshold if has else not found
        values = {
            "images": 1,
            "ran": int(ran),
            "tp": int(has and found),
            "fp": int(found and not has),
            "fn": int(has and not found),
            "tn": int(not has and not found),
            "located": int(located),
            "pixel_tp": tp,
            "pixel_fp": fp,
            "pixel_fn": fn,
        }
        self.counts += torch.tensor([values[k] for k in COUNTS], device=self.counts.device)
        self.seconds += seconds

    def compute(self) -> dict[str, float]:
        """The scores of :data:`SCORE_COLUMNS` (``ran`` as a fraction of the photos)."""
        c = dict(zip(COUNTS, self.counts.tolist(), strict=True))
        images = c["images"]
        precision, recall = _ratio(c["tp"], c["tp"] + c["fp"]), _ratio(c["tp"], c["tp"] + c["fn"])
        pixels = c["pixel_tp"] + c["pixel_fp"] + c["pixel_fn"]
        return {
            "images": float(images),
            "ran": _ratio(c["ran"], images),
            "accuracy": _ratio(c["tp"] + c["tn"], images),
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "localization": _ratio(c["located"], images),
            "pixel_iou": _ratio(c["pixel_tp"], pixels),
            "pixel_f1": _ratio(2 * c["pixel_tp"], 2 * c["pixel_tp"] + c["pixel_fp"] + c["pixel_fn"]),
            "ms_per_image": 1000 * _ratio(float(self.seconds), images),
        }


# ---- checkpoints -------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path, option: str) -> Path:
    """The checkpoint a path names; a path with ``*``, ``?`` or ``[`` is a glob and picks the newest match.

    So ``logs/demo/version_*/checkpoints/last.ckpt`` is the last epoch of the latest run.

    Raises:
        WeightsError: If a glob matches no file.
    """
    text = str(path)
    if not any(c in text for c in "*?["):
        return Path(text)
    anchor = Path("/") if text.startswith("/") else Path()
    matches = [p for p in anchor.glob(text.lstrip("/")) if p.is_file()]
    if not matches:
        raise WeightsError(f"{option}: no checkpoint matches '{text}'; train the model first or give the .ckpt path")
    return max(matches, key=lambda p: (p.stat().st_mtime, str(p)))


def _read_checkpoint(path: str | Path, option: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{option}: checkpoint '{path}' not found; give the .ckpt file a training run wrote")
    checkpoint = load_checkpoint(path, option, kind="Lightning checkpoint")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise WeightsError(f"{option}: '{path}' is not a Lightning checkpoint (no state_dict/hyper_parameters)")
    return checkpoint


def _kind(checkpoint: dict[str, Any]) -> str:
    hparams = checkpoint["hyper_parameters"]
    if "backbone" in hparams:
        return "classifier (MultiTaskClassifier)"
    if "encoder_name" in hparams:
        return "U-Net (CrackSegmenter)"
    return "model of another kind"


def _restore(cls: type[pl.LightningModule], path: str | Path, checkpoint: dict[str, Any], option: str) -> Any:
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    # Weights come from the checkpoint; never fetch or read the pretrained ones again.
    hparams["pretrained_weights"] = None
    # compile is a training speed-up: photos of every size would each compile again here.
    hparams["compile"] = False
    if cls is MultiTaskClassifier:
        hparams["pretrained"] = False
    else:
        hparams["encoder_weights"] = None
    try:
        # An empty context: when LightningCLI builds the cascade it sets the hyper-parameters every
        # LightningModule created meanwhile would save; these sub-models must save their own.
        module = contextvars.Context().run(cls, **hparams)
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise WeightsError(f"{option}: '{path}' does not load into {cls.__name__} ({first_line(err)})") from None
    module.on_load_checkpoint(checkpoint)
    return module.eval()


def load_classifier(path: str | Path, required_tasks: Sequence[str] = (), option: str = "model.classifier") -> Any:
    """Load a :class:`MultiTaskClassifier` checkpoint for the cascade and check it can serve it.

    Args:
        path: The classifier's ``.ckpt`` file.
        required_tasks: Tasks whose heads the cascade reads (the gate's, the scene head); each
            must exist and have been trained.
        option: The option that named the file, for error messages.

    Raises:
        WeightsError: One line naming the file and option, if it is missing, is not a classifier
            checkpoint, lacks a required head, or its class names differ from :mod:`crackcascade.labels`.
    """
    return _classifier_from(_read_checkpoint(path, option), path, required_tasks, option)


def _classifier_from(
    checkpoint: dict[str, Any], path: str | Path, required_tasks: Sequence[str], option: str
) -> MultiTaskClassifier:
    kind = _kind(checkpoint)
    if not kind.startswith("classifier"):
        raise WeightsError(f"{option}: '{path}' holds a {kind}, not a classifier (MultiTaskClassifier)")
    saved_classes = checkpoint.get("crackcascade_task_classes", {})
    for known in TASKS:
        if known.name in saved_classes and tuple(saved_classes[known.name]) != known.classes:
            raise WeightsError(
                f"{option}: '{path}' was trained with {known.name} classes {list(saved_classes[known.name])}, "
                f"but crackcascade's are {list(known.classes)}; retrain it with this version"
            )
    module = cast(MultiTaskClassifier, _restore(MultiTaskClassifier, path, checkpoint, option))
    trained = set(checkpoint.get("crackcascade_trained_tasks", module.tasks))
    for task in required_tasks:
        if task not in module.tasks or task not in trained:
            raise WeightsError(
                f"{option}: '{path}' has no trained {task} head (trained: {', '.join(sorted(trained))}); "
                f"train one with --model.tasks including {task}, or change the cascade's gate/routing"
            )
    return module


def load_segmenter(path: str | Path, option: str = "model.segmenter") -> Any:
    """Load a :class:`CrackSegmenter` checkpoint (with its validated thresholds) for the cascade.

    Raises:
        WeightsError: One line naming the file and option, if it is missing, is not a U-Net
            checkpoint, or has no ``crack`` class.
    """
    checkpoint = _read_checkpoint(path, option)
    kind = _kind(checkpoint)
    if not kind.startswith("U-Net"):
        raise WeightsError(f"{option}: '{path}' holds a {kind}, not a U-Net (CrackSegmenter)")
    module = cast(CrackSegmenter, _restore(CrackSegmenter, path, checkpoint, option))
    if CRACK not in module.classes:
        raise WeightsError(f"{option}: '{path}' segments {module.classes}, not '{CRACK}'; the cascade localizes cracks")
    return module


# ---- the cascade -------------------------------------------------------------------------------


class CrackCascade(pl.LightningModule):
    """Classifier, then U-Net: scene-level routing and a damage gate in front of crack segmentation.

    Built from checkpoints, for ``test`` and ``predict`` (there is nothing to train). Test data
    come from :class:`~crackcascade.data.datamodules.CrackMaskDataModule` with one loader per
    scale; each photo is scored ungated and gated (:class:`CascadeMetrics`), per true scale, and
    the table is printed and written to ``cascade_test.csv`` / ``.json`` in the log folder.

    Args:
        classifier: Checkpoint of a :class:`MultiTaskClassifier`.
        segmenter: Checkpoint of a :class:`CrackSegmenter` for every scale, or a mapping from
            scale (``pixel``, ``object``, ``structural``) to checkpoint; the paper trained one
            U-Net for pixel and one for object and structural. A checkpoint named twice is loaded once.
        gate_task: Classifier head that gates the U-Net; None segments every photo.
        gate_classes: Classes of ``gate_task`` that mean "crack here"; default flexural, shear, combined.
        gate_threshold: Summed probability of ``gate_classes`` at which the U-Net runs.
        classifier_size: Side the classifier sees; None takes the training ``image_size`` saved
            in the classifier checkpoint (else 224).
        iou_threshold: IoU a cracked photo's mask needs to count as located (the paper's measure).
        min_crack_pixels: Fewer crack pixels than this in a mask count as nothing masked.
        px_per_mm: Image scale for crack measurements in mm (None: pixels only).
        min_crack_area: Crack components smaller than this (pixels) are not measured.
    """

    def __init__(
        self,
        classifier: str,
        segmenter: str | dict[str, str],
        gate_task: str | None = "damage_type",
        gate_classes: Sequence[str] = CRACK_DAMAGE_TYPES,
        gate_threshold: float = 0.5,
        classifier_size: int | None = None,
        iou_threshold: float = 0.3,
        min_crack_pixels: int = 10,
        px_per_mm: float | None = None,
        min_crack_area: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 0 < gate_threshold <= 1:
            raise ConfigError(f"model.gate_threshold must be in (0, 1], got {gate_threshold}")
        if not 0 < iou_threshold <= 1:
            raise ConfigError(f"model.iou_threshold must be in (0, 1], got {iou_threshold}")
        if min_crack_pixels < 1 or min_crack_area < 1:
            raise ConfigError("model.min_crack_pixels and model.min_crack_area must be >= 1")
        if px_per_mm is not None and px_per_mm <= 0:
            raise ConfigError(f"model.px_per_mm must be > 0 or null, got {px_per_mm}")
        self.gate_task: str | None = None
        self.gate_indices: list[int] = []
        if gate_task is not None:
            try:
                task = get_task(gate_task)
                self.gate_indices = sorted({task.class_index(c) for c in gate_classes})
            except KeyError as err:
                raise ConfigError(f"model.gate_task/gate_classes: {err.args[0]}") from None
            if not self.gate_indices:
                raise ConfigError("model.gate_classes is empty; name the classes that open the gate")
            self.gate_task = task.name
        self.routes = {s: str(resolve_checkpoint(p, "model.segmenter")) for s, p in self._routes(segmenter).items()}
        classifier = str(resolve_checkpoint(classifier, "model.classifier"))
        paths = sorted(set(self.routes.values()))
        self.segmenters = nn.ModuleList(load_segmenter(p, "model.segmenter") for p in paths)
        self.route_index = {scale: paths.index(p) for scale, p in self.routes.items()}
        required = ([self.gate_task] if self.gate_task else []) + (["scene"] if len(paths) > 1 else [])
        checkpoint = _read_checkpoint(classifier, "model.classifier")
        self.classifier = _classifier_from(checkpoint, classifier, required, "model.classifier")
        # The size it was trained at, from its data module's saved options (else the paper's 224).
        trained_size = (checkpoint.get("datamodule_hyper_parameters") or {}).get("image_size")
        self.classifier_size = classifier_size or int(trained_size or 224)
        self.metrics = nn.ModuleDict()
        self._scales: list[str] = []
        self.last_table: list[dict[str, Any]] = []

    @staticmethod
    def _routes(segmenter: str | Mapping[str, str]) -> dict[str, str]:
        if isinstance(segmenter, str):
            return dict.fromkeys(SCALES, segmenter)
        routes: dict[str, str] = {}
        by_key = {normalize_name(s): s for s in SCALES}
        for key, path in segmenter.items():
            scale = by_key.get(normalize_name(key))
            if scale is None:
                raise ConfigError(f"model.segmenter: unknown scale {key!r}; use {', '.join(SCALES)}")
            routes[scale] = str(path)
        missing = [s for s in SCALES if s not in routes]
        if missing:
            raise ConfigError(
                f"model.segmenter has no U-Net for scale(s) {', '.join(missing)}; the scene head may pick "
                "any scale, so name a checkpoint for each (the same file may serve several)"
            )
        return routes

    # ---- one photo -------------------------------------------------------------------------------

    def diagnose(self, image: Tensor) -> dict[str, Tensor]:
        """Class probabilities of every classifier head for one ``uint8 (3, H, W)`` photo.

        The photo is resized to ``classifier_size`` square, as the classifier was trained.
        """
        size = self.classifier_size
        small = TF.resize(image, [size, size], antialias=True)
        logits = self.classifier(small[None].to(self.device))
        return {task: values[0].float().softmax(0).cpu() for task, values in logits.items()}

    def route(self, probabilities: Mapping[str, Tensor]) -> str | None:
        """The scale the scene head picks, or None without a scene head."""
        scene = probabilities.get("scene")
        return SCALES[int(scene.argmax())] if scene is not None else None

    def gate(self, probabilities: Mapping[str, Tensor]) -> tuple[float, bool]:
        """The gate's score (summed probability of ``gate_classes``) and whether the U-Net runs."""
        if self.gate_task is None:
            return 1.0, True
        score = float(probabilities[self.gate_task][self.gate_indices].sum())
        return score, score >= self.hparams["gate_threshold"]

    def segmenter_for(self, scale: str | None) -> CrackSegmenter:
        """The U-Net of a scale (the only one when routing is not needed)."""
        index = self.route_index[scale] if scale is not None else 0
        return cast(CrackSegmenter, self.segmenters[index])

    def _timed(self, function: Any, *args: Any) -> tuple[Any, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        result = function(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return result, time.perf_counter() - start

    def crack_mask(self, segmenter: CrackSegmenter, image: Tensor) -> Tensor:
        """``(H, W)`` uint8 class map of one photo, by tiles at native resolution."""
        return segmenter.class_map(segmenter.segment(image))

    # ---- test --------------------------------------------------------------------------------------

    def _eval_scales(self) -> list[str] | None:
        return getattr(attached_datamodule(self), "eval_scales", None)

    def _data_crack_value(self) -> int:
        classes = list(getattr(attached_datamodule(self), "classes", None) or [CRACK])
        if CRACK not in classes:
            raise ConfigError(f"data.classes {classes} has no '{CRACK}'; the cascade is scored on crack masks")
        return classes.index(CRACK) + 1

    def _metric(self, scale: str, mode: str) -> CascadeMetrics:
        key = f"{scale}_{mode}"
        if key not in self.metrics:
            metric = CascadeMetrics(self.hparams["iou_threshold"], self.hparams["min_crack_pixels"])
            self.metrics[key] = metric.to(self.device)
            if scale not in self._scales:
                self._scales.append(scale)
        return cast(CascadeMetrics, self.metrics[key])

    def on_test_start(self) -> None:
        """Start the table afresh; create each test scale's metrics up front (DDP ranks sync the same ones)."""
        self.metrics = nn.ModuleDict()
        self._scales = []
        for scale in self._eval_scales() or ():
            for mode in MODES:
                self._metric(scale, mode)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Score each photo of the batch ungated and gated, under its true scale."""
        if not has_samples(batch):
            return  # every photo of the batch was skipped (on_error=skip)
        scales = batch.get("scale") or [(self._eval_scales() or ["all"])[dataloader_idx]] * len(batch["image"])
        for image, mask, scale in zip(batch["image"], batch["mask"], scales, strict=True):
            valid = mask != MASK_IGNORE
            # Eval batches are padded bottom/right; the classifier must see the photo only.
            height = int(valid.any(1).nonzero().max()) + 1 if valid.any() else mask.shape[0]
            width = int(valid.any(0).nonzero().max()) + 1 if valid.any() else mask.shape[1]
            image, mask = image[:, :height, :width], mask[:height, :width]
            probabilities, seconds_classifier = self._timed(self.diagnose, image)
            segmenter = self.segmenter_for(self.route(probabilities))
            class_map, seconds_unet = self._timed(self.crack_mask, segmenter, image)
            predicted = class_map.to(mask.device) == segmenter.classes.index(CRACK) + 1
            truth = mask == self._data_crack_value()
            _, passed = self.gate(probabilities)
            self._metric(str(scale), "ungated").update(predicted, truth, True, seconds_unet)
            gated = predicted if passed else torch.zeros_like(predicted)
            seconds = seconds_classifier + (seconds_unet if passed else 0.0)
            self._metric(str(scale), "gated").update(gated, truth, passed, seconds)

    def on_test_epoch_end(self) -> None:
        """Compute, log, print and save the ungated vs gated table."""
        table = []
        scales = names_on_all_ranks(self._scales)
        for scale in scales:
            for mode in MODES:
                self._metric(scale, mode)  # a scale only other processes saw: empty here, summed in the sync
        self._scales = scales
        for scale in scales:
            for mode in MODES:
                with unupdated_metrics_ok():
                    scores = cast(CascadeMetrics, self.metrics[f"{scale}_{mode}"]).compute()
                table.append({"scale": scale, "mode": mode, **scores})
                for name in ("localization", "f1", "pixel_iou", "ran"):
                    # Equal on every rank (synced counts): "max" over ranks keeps it exact and tells Lightning so.
                    self.log(f"test_{scale}_{mode}_{name}", scores[name], sync_dist=True, reduce_fx="max")
        self.last_table = table
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a broadcast: every rank asks
        if self.trainer.is_global_zero:
            print("\n" + format_table(table))  # after the progress bar's line
            self._save_table(table, folder)

    def _save_table(self, table: list[dict[str, Any]], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        settings = {k: self.hparams[k] for k in ("gate_task", "gate_threshold", "iou_threshold")}
        settings["gate_classes"] = list(self.hparams["gate_classes"])
        (folder / "cascade_test.json").write_text(json.dumps({"settings": settings, "rows": table}, indent=1))
        lines = [",".join(("scale", "mode", *SCORE_COLUMNS))]
        lines += [",".join((r["scale"], r["mode"], *(f"{r[c]:.6g}" for c in SCORE_COLUMNS))) for r in table]
        (folder / "cascade_test.csv").write_text("\n".join(lines) + "\n")

    # ---- predict -----------------------------------------------------------------------------------

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Diagnose, route, gate and (if open) segment and measure each photo.

        Returns:
            One record per photo: ``path``, ``height``, ``width``, ``tasks`` (class, probability
            and all class probabilities of every trained head), ``scale``, ``gate`` (task,
            classes, threshold, score, passed; None when ungated), ``segmented``, ``classes``,
            ``measurements`` (see :func:`crackcascade.measure.measure_cracks`; None when not
            segmented), and for the writer ``mask`` ``(H, W)`` uint8 and ``image`` ``(H, W, 3)``
            uint8 arrays.
        """
        from crackcascade.measure import measure_cracks

        if not has_samples(batch):
            return []
        records = []
        for image, path in zip(batch["image"], batch["path"], strict=True):
            probabilities = self.diagnose(image)
            scale = self.route(probabilities)
            score, passed = self.gate(probabilities)
            segmenter = self.segmenter_for(scale)
            height, width = image.shape[-2:]
            class_map = self.crack_mask(segmenter, image) if passed else torch.zeros((height, width), dtype=torch.uint8)
            crack = class_map == segmenter.classes.index(CRACK) + 1
            measurements = None
            if passed:
                measurements = measure_cracks(
                    crack.numpy(), px_per_mm=self.hparams["px_per_mm"], min_area=self.hparams["min_crack_area"]
                ).to_dict()
            records.append(
                {
                    "path": path,
                    "height": int(height),
                    "width": int(width),
                    "tasks": self._task_records(probabilities),
                    "scale": scale,
                    "gate": self._gate_record(score, passed),
                    "segmented": passed,
                    "classes": list(segmenter.classes),
                    "measurements": measurements,
                    "mask": class_map.numpy(),
                    "image": image.permute(1, 2, 0).cpu().numpy(),
                }
            )
        return records

    def _task_records(self, probabilities: Mapping[str, Tensor]) -> dict[str, dict[str, Any]]:
        out = {}
        for task in self.classifier.trained_tasks:
            classes = get_task(task).classes
            values = probabilities[task].tolist()
            best = max(range(len(values)), key=values.__getitem__)
            out[task] = {
                "class": classes[best],
                "probability": values[best],
                "probabilities": dict(zip(classes, values, strict=True)),
            }
        return out

    def _gate_record(self, score: float, passed: bool) -> dict[str, Any] | None:
        if self.gate_task is None:
            return None
        classes = get_task(self.gate_task).classes
        return {
            "task": self.gate_task,
            "classes": [classes[i] for i in self.gate_indices],
            "threshold": self.hparams["gate_threshold"],
            "score": score,
            "passed": passed,
        }

    def configure_optimizers(self) -> None:
        """The cascade is assembled from trained models; it is not trained itself."""
        raise ConfigError("CrackCascade is built from trained checkpoints; use `test` or `predict`, not `fit`")


def format_table(table: Sequence[Mapping[str, Any]]) -> str:
    """The ungated vs gated table as fixed-width text, one row per scale and mode."""
    header = (
        f"{'scale':<11}{'mode':<9}{'images':>7}{'ran':>7}{'acc':>7}{'prec':>7}{'recall':>7}{'F1':>7}"
        f"{'loc.acc':>9}{'pix IoU':>9}{'pix F1':>8}{'ms/img':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in table:
        lines.append(
            f"{r['scale']:<11}{r['mode']:<9}{int(r['images']):>7}{r['ran']:>7.2f}{r['accuracy']:>7.3f}"
            f"{r['precision']:>7.3f}{r['recall']:>7.3f}{r['f1']:>7.3f}{r['localization']:>9.3f}"
            f"{r['pixel_iou']:>9.3f}{r['pixel_f1']:>8.3f}{r['ms_per_image']:>8.1f}"
        )
    return "\n".join(lines)
