"""MultiTaskClassifier: one shared timm backbone, one linear head per Phi-Net task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import timm
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import BinaryConfusionMatrix

from crackcascade.callbacks.previews import TaskPreviews
from crackcascade.checkpoints.weights import load_weights
from crackcascade.data.sampling import has_samples
from crackcascade.errors import ConfigError
from crackcascade.hardware import CompileMode
from crackcascade.labels import CRACK_DAMAGE_TYPES, get_task, resolve_tasks, task_index
from crackcascade.metrics.classification import ConfusionCounts, binary_scores, scores_from_confusion
from crackcascade.metrics.distributed import unupdated_metrics_ok
from crackcascade.metrics.paper import Table2Counts, format_table2, table2_scores
from crackcascade.models.base import TaskModule, timm_input_stats
from crackcascade.models.losses import masked_cross_entropy
from crackcascade.reliability import check_finite_loss
from crackcascade.tracking import log_confusion_matrices

Batch = dict[str, Any]
STAGES: tuple[str, ...] = ("train", "val", "test")
CRACK_STAGES: tuple[str, ...] = ("val", "test")
"""Stages scored for "crack present" when their batches carry a ``"crack"`` flag (cross-dataset tests)."""
_DAMAGE_TYPE = get_task("damage_type")


def collate_tasks(batch: Batch | dict[str, Batch | None]) -> Batch:
    """Merge a CombinedLoader batch ``{task: samples}`` into one batch of samples.

    Concatenating lets the backbone run once per step on every task's images; the label vectors
    already say which task each image is labelled for.
    """
    if "image" in batch or "skipped" in batch:
        return batch
    # A task's batch is None when its loader is done (max_size mode), imageless when all its samples were skipped.
    parts = [part for part in batch.values() if part is not None and "image" in part]
    if not parts:
        return {"skipped": []}
    return {
        "image": torch.cat([p["image"] for p in parts]),
        "labels": torch.cat([p["labels"] for p in parts]),
        "path": [path for p in parts for path in p["path"]],
    }


def predicts_crack(damage_type_logits: Tensor) -> Tensor:
    """Whether each image is called cracked: the damage-type argmax is one of ``CRACK_DAMAGE_TYPES``.

    Args:
        damage_type_logits: ``(B, C)`` logits of the damage-type head.

    Returns:
        ``(B,)`` bool tensor.
    """
    crack_classes = torch.tensor(
        [_DAMAGE_TYPE.class_index(name) for name in CRACK_DAMAGE_TYPES], device=damage_type_logits.device
    )
    return torch.isin(damage_type_logits.argmax(1), crack_classes)


class MultiTaskClassifier(TaskModule):
    """Shared timm backbone with one classification head per Phi-Net task (Bai et al., 2020).

    Images arrive as ``uint8``; the module normalizes them with the backbone's pretrained mean
    and std, so data pipelines never need to know the backbone.

    Args:
        backbone: timm model name (``resnet152`` in the paper; ``test_resnet`` for tests).
        tasks: Tasks to give heads (names or aliases); None for all eight.
        pretrained: Download timm's pretrained weights from its hub (needs the network).
        pretrained_weights: Local backbone weights (.safetensors, .pth/.pt, or a Lightning
            .ckpt of this class); loads offline, with an error if the keys do not match.
        lr: Learning rate.
        optimizer: ``sgd`` (the paper's, with ``momentum``), ``adamw`` or ``adam``.
        momentum: SGD momentum.
        weight_decay: Weight decay.
        scheduler: ``cosine`` annealing over ``trainer.max_epochs``, or ``none``.
        task_weights: Loss weight per task (default 1 each).
        label_smoothing: Label smoothing of the cross-entropy.
        dropout: Dropout before each head.
        freeze_backbone_epochs: Train only the heads for this many epochs (backbone frozen, its
            batch-norm statistics too), then everything.
        channels_last: Run the backbone in channels-last memory layout (NHWC). cuDNN's tensor-core
            convolutions and oneDNN's CPU convolutions work in it, so they skip layout conversions;
            the gain is largest with ``--trainer.precision bf16-mixed`` (see
            docs/performance.md). The weights are the same; only their memory order changes.
        compile: Compile the backbone with ``torch.compile`` (in place, so checkpoints keep plain
            state-dict keys). The first steps are slow while it compiles, so it pays off on long
            runs; inputs of a new shape compile again. Needs a C++ compiler on CPU.
        compile_mode: ``torch.compile`` mode: ``default``, ``reduce-overhead`` (CUDA graphs),
            ``max-autotune`` or ``max-autotune-no-cudagraphs``.
    """

    offline_hparams: ClassVar[dict[str, Any]] = {**TaskModule.offline_hparams, "pretrained": False}

    def __init__(
        self,
        backbone: str = "resnet152",
        tasks: list[str] | None = None,
        pretrained: bool = False,
        pretrained_weights: str | None = None,
        lr: float = 1e-3,
        optimizer: Literal["sgd", "adamw", "adam"] = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: Literal["none", "cosine"] = "none",
        task_weights: dict[str, float] | None = None,
        label_smoothing: float = 0.0,
        dropout: float = 0.0,
        freeze_backbone_epochs: int = 0,
        channels_last: bool = True,
        compile: bool = False,
        compile_mode: CompileMode = "default",
    ) -> None:
        super().__init__(
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            scheduler=scheduler,
            channels_last=channels_last,
            compile=compile,
            compile_mode=compile_mode,
        )
        self.save_hyperparameters()
        try:
            self.tasks = resolve_tasks(tasks)
        except ValueError as err:
            raise ConfigError(f"model.tasks: {err}") from None
        self.optimization.check()
        self.task_weights = {get_task(k).name: float(v) for k, v in (task_weights or {}).items()}
        unknown = set(self.task_weights) - set(self.tasks)
        if unknown:
            raise ConfigError(f"model.task_weights names tasks without a head: {', '.join(sorted(unknown))}")
        try:
            net: Any = timm.create_model(backbone, pretrained=pretrained, num_classes=0)
        except RuntimeError as err:
            raise ConfigError(f"model.backbone '{backbone}': {err}") from None
        self.backbone = net
        if pretrained_weights:
            classifier = net.pretrained_cfg.get("classifier", "fc")
            classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
            load_weights(self.backbone, pretrained_weights, ignore_prefixes=[f"{c}." for c in classifiers])
        self.prepare_network(self.backbone)  # in place: the state-dict keys stay "backbone.*"
        features = int(net.num_features)
        self.heads = nn.ModuleDict(
            {t: nn.Sequential(nn.Dropout(dropout), nn.Linear(features, get_task(t).num_classes)) for t in self.tasks}
        )
        self.set_input_stats(*timm_input_stats(self.backbone))
        # Keyed "<stage>_cm": a ModuleDict key may not shadow nn.Module attributes such as "train".
        self.confusion = nn.ModuleDict(
            {
                f"{stage}_cm": nn.ModuleDict({t: ConfusionCounts(get_task(t).num_classes) for t in self.tasks})
                for stage in STAGES
            }
        )
        # "Crack present" as read from the damage-type head, for data with a crack flag only (the
        # paper's Table 2); None without that head, so other models' state and checkpoints are unchanged.
        self.crack_confusion: nn.ModuleDict | None = None
        if _DAMAGE_TYPE.name in self.tasks:
            self.crack_confusion = nn.ModuleDict({f"{stage}_cm": BinaryConfusionMatrix() for stage in CRACK_STAGES})
        # The paper's Table 2 (damage type x crack flag) of a test run on crack-flagged data.
        self.table2: Table2Counts | None = Table2Counts() if _DAMAGE_TYPE.name in self.tasks else None
        self.last_metrics: dict[str, dict[str, float]] = {}
        # Tasks the data of the current run labels; heads known to be trained (None: not known, all
        # count); heads whose metrics count in validate/test (the trained ones of the data).
        self._data_tasks: set[str] = set(self.tasks)
        self._trained_tasks: set[str] | None = None
        self._scored: set[str] = set(self.tasks)
        self._untrained_crack_head = False  # validate/test reads crack scores from a damage-type head never trained

    def _confusion(self, stage: str, task: str) -> ConfusionCounts:
        return cast(ConfusionCounts, self.confusion[f"{stage}_cm"][task])  # type: ignore[index]

    def _crack_confusion(self, stage: str) -> BinaryConfusionMatrix:
        assert self.crack_confusion is not None  # only called with a damage-type head
        return cast(BinaryConfusionMatrix, self.crack_confusion[f"{stage}_cm"])

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Return logits per task for ``(B, 3, H, W)`` images (``uint8`` or float 0-255)."""
        # The layout is set on the uint8 input (a quarter of the float bytes); normalizing keeps it.
        features = self.backbone(self.normalize(self.to_layout(images)))
        return {t: head(features) for t, head in self.heads.items()}

    @property
    def trained_tasks(self) -> tuple[str, ...]:
        """The heads that were trained, in head order: the checkpoint's record, else the tasks a fit's data labels."""
        trained = self._trained_tasks if self._trained_tasks is not None else self._data_tasks
        return tuple(t for t in self.tasks if t in trained)

    def setup(self, stage: str) -> None:
        """Check that the data's tasks all have a head (photos to predict carry no labels)."""
        trainer = self.attached_trainer()
        if stage == "predict" or trainer is None:
            return
        data_tasks = getattr(getattr(trainer, "datamodule", None), "tasks", ())
        self._data_tasks = set(data_tasks or self.tasks)
        if stage == "fit":
            self._trained_tasks = set(self._data_tasks)  # a resumed fit's checkpoint says the same when restored
        missing = [t for t in data_tasks if t not in self.tasks]
        if missing:
            raise ConfigError(
                f"data has labels for task '{missing[0]}' but model.tasks has no head for it; "
                "add it to --model.tasks or remove it from --data.tasks"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the model's class, input statistics and trained heads (``predict`` and ``test`` use only those)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["crackcascade_trained_tasks"] = list(self.trained_tasks)
        # Class names as trained, so a later change of labels.py is caught when the file is loaded.
        checkpoint["crackcascade_task_classes"] = {t: list(get_task(t).classes) for t in self.tasks}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the input statistics and the trained tasks (checkpoints from other tools have every head trained)."""
        super().on_load_checkpoint(checkpoint)
        self._trained_tasks = set(checkpoint.get("crackcascade_trained_tasks", self.tasks))

    def _choose_scored(self, stage: str) -> None:
        """Score every head while fitting; in ``validate``/``test`` leave out (and name once) the untrained ones.

        A head that never trained answers at random: its accuracy would read as a result. Crack
        scores read from an untrained damage-type head are still given, with a warning saying so.
        """
        self._scored = set(self.tasks)
        self._untrained_crack_head = False
        if self.trainer.state.fn == TrainerFn.FITTING:
            return
        trained = set(self.trained_tasks)
        self._untrained_crack_head = self.crack_confusion is not None and _DAMAGE_TYPE.name not in trained
        untrained = [t for t in self.tasks if t in self._data_tasks and t not in trained]
        if untrained:
            self._scored -= set(untrained)
            rank_zero_warn(
                f"{stage}: the model's {', '.join(untrained)} head(s) were never trained (trained: "
                f"{', '.join(sorted(trained)) or 'none'}); their {stage} metrics are left out, as predict leaves "
                "them out"
            )

    def on_validation_start(self) -> None:
        """Choose the heads to score (see :meth:`_choose_scored`)."""
        self._choose_scored("validate")

    def on_test_start(self) -> None:
        """Choose the heads to score (see :meth:`_choose_scored`)."""
        self._choose_scored("test")

    def on_train_start(self) -> None:
        """Apply ``freeze_backbone_epochs`` also to an epoch resumed mid-way, which gets no epoch-start hook."""
        self.on_train_epoch_start()

    def on_train_epoch_start(self) -> None:
        """Freeze or unfreeze the backbone according to ``freeze_backbone_epochs``."""
        frozen = self.current_epoch < self.hparams["freeze_backbone_epochs"]
        self.backbone.requires_grad_(not frozen)
        if frozen:
            self.backbone.eval()

    def _step(self, batch: Batch, stage: str) -> Batch | Tensor | None:
        batch = collate_tasks(batch)
        if not has_samples(batch):
            return None  # every sample of the step was skipped (on_error=skip): no update
        labels = batch["labels"]
        logits = self(batch["image"])
        if stage != "train":
            logits = {task: value for task, value in logits.items() if task in self._scored}
        loss, per_task = masked_cross_entropy(
            logits, labels, self.task_weights, self.hparams["label_smoothing"] if stage == "train" else 0.0
        )
        if stage == "train":
            check_finite_loss(self, loss, {f"{task} loss": value for task, value in per_task.items()}, batch)
        size = len(labels)
        # Without a scored head the data labels, the loss would be an exact 0 (the same on every rank).
        if stage == "train" or self._data_tasks & set(logits):
            self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=size, sync_dist=stage != "train")
        # Lightning keeps a training step's values only on the steps it writes to the loggers,
        # and every log() call costs CPU time in every step; so the eight per-task losses are
        # logged on those steps only (the total, shown in the progress bar, on every step).
        per_task_logged = stage != "train" or self._writes_logs()
        for task, task_loss in per_task.items():
            if task not in self._data_tasks or not per_task_logged:
                continue  # an unlabelled task's exact-zero loss would only dilute the curves
            self.log(f"{stage}_{task}_loss", task_loss, batch_size=size, sync_dist=stage != "train")
        for task, task_logits in logits.items():
            self._confusion(stage, task).update(task_logits.detach().argmax(1), labels[:, task_index(task)])
        if (
            "crack" in batch
            and self.crack_confusion is not None
            and _DAMAGE_TYPE.name in logits
            and stage in CRACK_STAGES
        ):
            predicted = predicts_crack(logits[_DAMAGE_TYPE.name].detach())
            self._crack_confusion(stage).update(predicted.long(), torch.as_tensor(batch["crack"]).long())
            if stage == "test" and self.table2 is not None:
                scene = logits["scene"].detach().argmax(1) if "scene" in logits else None
                self.table2.update(logits[_DAMAGE_TYPE.name].detach().argmax(1), torch.as_tensor(batch["crack"]), scene)
        if stage == "val":
            # For the W&B previews (callbacks.previews.TaskPreviews): the tasks the data labels, in head order.
            shown = {task: value for task, value in logits.items() if task in self._data_tasks}
            return {"images": batch["image"], "labels": labels, "logits": shown}
        return loss

    def _writes_logs(self) -> bool:
        """Whether Lightning writes this training step's logged values to the loggers.

        Lightning's rule: every ``log_every_n_steps`` optimizer steps (counted before this step's),
        every step of a ``fast_dev_run``, and the step on which training is stopped.
        """
        trainer: Any = self.trainer  # log_every_n_steps and fast_dev_run are set at run time, untyped
        every = trainer.log_every_n_steps
        due = every > 0 and (trainer.global_step + 1) % every == 0
        return due or bool(trainer.fast_dev_run) or trainer.should_stop

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        """Masked multi-task cross-entropy on the concatenated task batches; stops at a NaN or infinite loss."""
        return cast(Tensor | None, self._step(batch, "train"))

    def validation_step(self, batch: Batch, batch_idx: int) -> Batch | None:
        """Loss and confusion matrices on validation images; returns what the W&B previews show."""
        return cast(Batch | None, self._step(batch, "val"))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Loss and confusion matrices on test images."""
        self._step(batch, "test")

    def _epoch_end(self, stage: str) -> None:
        # Every rank computes every task's (synced) matrix, so no rank waits on a collective
        # that another skipped; tasks with no labelled image anywhere are then left out.
        metrics: dict[str, float] = {}
        matrices: dict[str, Any] = {}
        crack = self._crack_scores(stage)
        for task in self.tasks:
            matrix = self._confusion(stage, task).compute()
            self._confusion(stage, task).reset()
            if matrix.sum() == 0:
                continue
            accuracy, f1 = scores_from_confusion(matrix)
            metrics[f"{task}_acc"], metrics[f"{task}_f1"] = accuracy.item(), f1.item()
            matrices[task] = {"classes": list(get_task(task).classes), "matrix": matrix.tolist()}
        if not matrices and not crack:
            return
        if matrices:
            metrics["acc"] = sum(metrics[f"{t}_acc"] for t in matrices) / len(matrices)
            metrics["f1"] = sum(metrics[f"{t}_f1"] for t in matrices) / len(matrices)
        metrics.update({f"crack_{name}": value for name, value in crack.items()})
        for name, value in metrics.items():
            # Equal on every rank (from synced matrices): "max" over ranks keeps it exact and tells Lightning so.
            self.log(f"{stage}_{name}", value, prog_bar=name == "acc", sync_dist=True, reduce_fx="max")
        self.last_metrics[stage] = metrics
        if stage != "train" and matrices and not self.trainer.sanity_checking:
            # log_dir is a broadcast: every rank asks, rank zero writes.
            self._save_confusion(stage, matrices, self.trainer.log_dir)
            log_confusion_matrices(self.trainer, stage, matrices)
            if stage == "val":
                per_task = " ".join(f"{t} {metrics[f'{t}_acc']:.3f}" for t in matrices)
                rank_zero_info(f"epoch {self.current_epoch}: val_acc {metrics['acc']:.3f} ({per_task})")

    def _crack_scores(self, stage: str) -> dict[str, float]:
        """Crack accuracy, precision, recall and F1 of a stage (synced), or {} when nothing was counted."""
        if self.crack_confusion is None or stage not in CRACK_STAGES:
            return {}
        metric = self._crack_confusion(stage)
        # Computed on every rank, counted or not, so that no rank waits on a sync another skipped;
        # Phi-Net data never counts here, and torchmetrics would warn about that every epoch.
        with unupdated_metrics_ok():
            matrix = metric.compute()
        metric.reset()
        if matrix.sum() == 0:
            return {}
        if self._untrained_crack_head and not self.trainer.sanity_checking:
            rank_zero_warn(
                f"{stage}: crack scores are read from the damage_type head, which this checkpoint records as never "
                f"trained (trained: {', '.join(self.trained_tasks) or 'none'}); train it on Phi-Net damage types first"
            )
        return binary_scores(matrix)

    @rank_zero_only
    def _save_confusion(self, stage: str, matrices: dict[str, Any], log_dir: str | None) -> None:
        if log_dir is None:
            return
        path = Path(log_dir) / f"confusion_{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"epoch": self.current_epoch, "tasks": matrices}, indent=1))

    def on_train_epoch_end(self) -> None:
        """Log training accuracy and macro-F1 per task."""
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        """Log validation accuracy and macro-F1 per task and their means; save confusion matrices.

        With a W&B logger, the confusion matrices also become W&B charts and the first validation
        image of each task is logged with its predicted and true class (``val_previews``, see
        :meth:`preview_callback`).
        """
        self._epoch_end("val")

    def preview_callback(self) -> TaskPreviews:
        """The W&B previews: the first validation image of each task, captioned with prediction and truth."""
        return TaskPreviews()

    def on_test_epoch_end(self) -> None:
        """Log test metrics and print the per-task table (and Table 2 on crack-flagged data)."""
        self._epoch_end("test")
        self.print_summary("test")
        if self.table2 is not None:
            with unupdated_metrics_ok():
                counts, pixel_share = self.table2.compute()
            self.table2.reset()
            if counts.sum() > 0:
                self._table2(counts.cpu().numpy(), pixel_share)

    def _table2(self, counts: Any, pixel_share: float | None) -> None:
        """Log, print and save the paper's Table 2 from the test run's counts."""
        scores = table2_scores(counts)
        for name, value in scores.items():
            self.log(f"test_table2_{name.replace('-', '_')}_acc", value, sync_dist=True, reduce_fx="max")
        log_dir = self.trainer.log_dir  # a broadcast: every rank asks, rank zero writes
        if self.trainer.is_global_zero:
            rank_zero_info("Table 2 (Bai et al. 2020): damage type predicted x crack label, ours beside the paper's")
            rank_zero_info(format_table2(counts, pixel_share))
            if log_dir is not None:
                record = {"counts": counts.tolist(), "accuracy": scores, "pixel_share": pixel_share}
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                (Path(log_dir) / "table2.json").write_text(json.dumps(record, indent=1))

    def summary_lines(self, stage: str) -> list[str]:
        """A table of a stage's last accuracy and macro-F1 per task, with chance level."""
        metrics = self.last_metrics.get(stage)
        if not metrics:
            return []
        lines = [
            f"{stage} metrics per task",
            f"{'task':<14}{'classes':>8}{'chance':>8}{'acc':>8}{'macro-F1':>10}",
        ]
        for task in self.tasks:
            if f"{task}_acc" in metrics:
                n = get_task(task).num_classes
                lines.append(
                    f"{task:<14}{n:>8}{1 / n:>8.3f}{metrics[f'{task}_acc']:>8.3f}{metrics[f'{task}_f1']:>10.3f}"
                )
        if "acc" in metrics:
            lines.append(f"{'mean':<14}{'':>8}{'':>8}{metrics['acc']:>8.3f}{metrics['f1']:>10.3f}")
        if "crack_acc" in metrics:
            # The damage-type head read as crack / no crack, against the data's crack flags (F1 of "crack").
            lines.append(
                f"{'crack present':<14}{2:>8}{0.5:>8.3f}{metrics['crack_acc']:>8.3f}{metrics['crack_f1']:>10.3f}"
                f"  precision {metrics['crack_precision']:.3f} recall {metrics['crack_recall']:.3f}"
            )
        return lines

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Return one record per image: class, probability and all class probabilities per task."""
        if not has_samples(batch):
            return []
        logits = self(batch["image"])
        probabilities = {t: logits[t].float().softmax(1).cpu() for t in self.trained_tasks}
        records = []
        for i, path in enumerate(batch["path"]):
            record: dict[str, Any] = {"path": path, "tasks": {}}
            for task, probs in probabilities.items():
                classes = get_task(task).classes
                best = int(probs[i].argmax())
                record["tasks"][task] = {
                    "class": classes[best],
                    "probability": float(probs[i, best]),
                    "probabilities": {c: float(p) for c, p in zip(classes, probs[i].tolist(), strict=True)},
                }
            records.append(record)
        return records
