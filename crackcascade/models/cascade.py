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

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from crackcascade.checkpoints.reading import read_lightning_checkpoint, resolve_checkpoint
from crackcascade.checkpoints.restore import classifier_from_checkpoint, load_segmenter
from crackcascade.data.cracks import MASK_IGNORE
from crackcascade.data.sampling import has_samples
from crackcascade.errors import ConfigError
from crackcascade.labels import CRACK, CRACK_DAMAGE_TYPES, SCALES, get_task, normalize_name
from crackcascade.measure import measure_cracks
from crackcascade.metrics.cascade import SCORE_COLUMNS, CascadeMetrics
from crackcascade.metrics.distributed import names_on_all_ranks, unupdated_metrics_ok
from crackcascade.metrics.paper import PaperLocalization, format_localization
from crackcascade.models.base import CrackcascadeModule
from crackcascade.models.segmenter import CrackSegmenter
from crackcascade.report import html_table

Batch = dict[str, Any]

MODES: tuple[str, ...] = ("ungated", "gated")
"""The two ways every test photo is scored: U-Net on every photo, and the cascade."""


# ---- the cascade -------------------------------------------------------------------------------


class CrackCascade(CrackcascadeModule):
    """Classifier, then U-Net: scene-level routing and a damage gate in front of crack segmentation.

    Built from checkpoints, for ``test`` and ``predict`` (there is nothing to train). Test data
    come from :class:`~crackcascade.data.datamodules.CrackMaskDataModule` with one loader per
    scale; each photo is scored ungated and gated (:class:`CascadeMetrics`), per true scale, with
    crackcascade's localization (all photos) and the paper's (among the photos the U-Net
    segmented); the table is printed and written to ``cascade_test.csv`` / ``.json`` / ``.html``
    in the log folder.

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
        iou_threshold: IoU a cracked photo's mask needs to count as located (crackcascade's reading
            of the paper's "located", which it judged by eye).
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
        checkpoint = read_lightning_checkpoint(classifier, "model.classifier")
        self.classifier = classifier_from_checkpoint(checkpoint, classifier, required, "model.classifier")
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
        return getattr(self.attached_datamodule(), "eval_scales", None)

    def _data_crack_value(self) -> int:
        classes = list(getattr(self.attached_datamodule(), "classes", None) or [CRACK])
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
                for name in ("localization", "paper_localization", "f1", "pixel_iou", "ran"):
                    # Equal on every rank (synced counts): "max" over ranks keeps it exact and tells Lightning so.
                    self.log(f"test_{scale}_{mode}_{name}", scores[name], sync_dist=True, reduce_fx="max")
        self.last_table = table
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a broadcast: every rank asks
        if self.trainer.is_global_zero:
            print("\n" + format_table(table))  # after the progress bar's line
            print("\nlocalization as the paper computed it (among the photos segmented), beside its figures")
            print(format_localization(paper_rows(table)))
            self._save_table(table, folder)

    def _save_table(self, table: list[dict[str, Any]], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        settings = {k: self.hparams[k] for k in ("gate_task", "gate_threshold", "iou_threshold")}
        settings["gate_classes"] = list(self.hparams["gate_classes"])
        # NaN (the gate passed nothing) is not JSON: null.
        rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in table]
        (folder / "cascade_test.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
        lines = [",".join(("scale", "mode", *SCORE_COLUMNS))]
        lines += [",".join((r["scale"], r["mode"], *(f"{r[c]:.6g}" for c in SCORE_COLUMNS))) for r in table]
        (folder / "cascade_test.csv").write_text("\n".join(lines) + "\n")
        caption = (
            "Ungated vs gated per scale. localization: located photos over all photos (crackcascade); "
            "paper_localization: located among the passed photos (Bai et al.'s definition)."
        )
        page = f"<!doctype html><meta charset='utf-8'><title>cascade test</title>{html_table(rows, caption)}"
        (folder / "cascade_test.html").write_text(page + "\n")

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
        f"{'loc.acc':>9}{'paper.loc':>10}{'located/passed':>16}{'pix IoU':>9}{'pix F1':>8}{'ms/img':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in table:
        counts = f"{int(r['located'])}/{int(r['passed'])}"
        lines.append(
            f"{r['scale']:<11}{r['mode']:<9}{int(r['images']):>7}{r['ran']:>7.2f}{r['accuracy']:>7.3f}"
            f"{r['precision']:>7.3f}{r['recall']:>7.3f}{r['f1']:>7.3f}{r['localization']:>9.3f}"
            f"{r['paper_localization']:>10.3f}{counts:>16}"
            f"{r['pixel_iou']:>9.3f}{r['pixel_f1']:>8.3f}{r['ms_per_image']:>8.1f}"
        )
    return "\n".join(lines)


def paper_rows(table: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], PaperLocalization]:
    """The counts behind the paper's localization, per (scale, mode), from a test table."""
    return {
        (str(r["scale"]), str(r["mode"])): PaperLocalization(int(r["images"]), int(r["passed"]), int(r["located"]))
        for r in table
    }
