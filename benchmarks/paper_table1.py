"""Table 1 of Bai et al. (2020) side by side: eight single-task networks and one eight-head network.

The paper trained one ResNet-152 per Phi-Net task. This script runs that protocol with
crackcascade's own CLI machinery (:func:`crackcascade.cli.build_cli`), so every run's recipe is
exactly the config's (default ``configs/paper/classifier.yaml``):

1. for each task, one single-task network (``--data.tasks [t] --model.tasks [t]``), trained and
   then tested on that task's test split;
2. one network with a head for every task asked for (the eight-head network), trained and tested
   the same way;

and prints, per task: the number of classes, the train / val / test sizes (counted from the
datamodule's datasets after setup), the paper's accuracy, ours single-task and ours eight-head
(that network's test accuracy on the task). The same table, with each run's tasks, test metrics
and log folder, is written as JSON (``--out``).

Every run uses one device (``--trainer.devices 1``: the config's ``auto`` would start Lightning's
multi-GPU launcher, which runs this whole script again per process). Each run is tested with the
checkpoint its config's first ModelCheckpoint judged best on validation (``val_acc`` in the
paper config), or with its final weights where there is none.

**The paper column.** crackcascade does not transcribe the paper's per-task accuracies; they come
from ``--paper-json FILE``, a JSON object of test accuracies as fractions
(``{"<task>": <accuracy between 0 and 1>, ...}``, task names or aliases such as ``task1``), which
a user who has the paper can write. A task the file leaves out prints as ``-``.

    python benchmarks/paper_table1.py --data-root /data/phinet             # the paper's protocol
    python benchmarks/paper_table1.py --data-root /data/phinet --paper-json table1.json \\
        -- --trainer.max_epochs 5                                          # options after -- go to every run
    python benchmarks/paper_table1.py --quick --tasks scene damage_type    # synthetic, seconds on a CPU

``--quick`` writes tiny synthetic Phi-Net arrays to a temporary folder and trains ``test_resnet``
(random weights saved as a local file, since the config requires ``pretrained_weights``) at
32x32 for one epoch on the CPU: it shows the script works and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from safetensors.torch import save_file
from torch.utils.data import Dataset

from crackcascade.checkpoints import trusted
from crackcascade.cli import build_cli
from crackcascade.data.datamodules.phinet import PhiNetDataModule
from crackcascade.data.phinet import MANIFEST_KEY
from crackcascade.errors import ConfigError, find_error, one_line
from crackcascade.labels import TASK_NAMES, get_task, resolve_tasks
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.synthetic import write_phinet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "paper" / "classifier.yaml"
SPLITS = ("train", "val", "test")
QUICK_DATA = {"n_train": 12, "n_test": 6, "size": 32}
"""What ``--quick`` writes per task (PHI arrays)."""
PAPER_SOURCE = "paper column: from --paper-json (the paper's accuracies are not transcribed here), - = not given"
"""Where the paper column comes from, printed above the table."""


def quick_options(workdir: Path) -> list[str]:
    """Write the ``--quick`` weights file and return the options that make every run tiny, on the CPU."""
    weights = workdir / "test_resnet.safetensors"
    # A stand-in for the ImageNet weights the config requires: timm's test_resnet, random but
    # seeded, so that --quick prints the same table every time.
    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), str(weights))
    return [
        "--model.backbone", "test_resnet", "--model.pretrained_weights", str(weights),
        "--data.image_size", "32", "--data.batch_size", "8", "--data.num_workers", "0",
        "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def split_sizes(data: PhiNetDataModule, task: str) -> dict[str, int]:
    """Images per split labelled for ``task``, counted from the datamodule's datasets after setup.

    PHI arrays and image folders hold one dataset per task; a CSV manifest holds one for all
    tasks, whose label matrix says which images are labelled for which task.
    """
    sizes: dict[str, int] = {}
    for split in SPLITS:
        datasets: dict[str, Dataset[Any]] = data.datasets.get(split, {})
        if task in datasets:
            sizes[split] = len(datasets[task])  # type: ignore[arg-type]
        elif MANIFEST_KEY in datasets:
            labels = datasets[MANIFEST_KEY].labels  # type: ignore[attr-defined]
            sizes[split] = int((labels[:, TASK_NAMES.index(task)] >= 0).sum())
        else:
            sizes[split] = 0
    return sizes


def tested_checkpoint(trainer: Any) -> str | None:
    """The checkpoint the first ModelCheckpoint judged best on its monitored score, or None (final weights)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
        return str(callback.best_model_path)
    return None


def train_and_test(name: str, tasks: Sequence[str], options: list[str], run_dir: Path | None) -> dict[str, Any]:
    """Build one run from the config, train it, test it; return its tasks, sizes and test metrics."""
    listed = f"[{','.join(tasks)}]"
    args = [*options, "--data.tasks", listed, "--model.tasks", listed]
    if run_dir is not None:
        args += ["--trainer.default_root_dir", str(run_dir)]
    print(f"--- {name}: training {', '.join(tasks)}", flush=True)
    started = time.perf_counter()
    cli = build_cli(args, run=False)
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    if not isinstance(model, MultiTaskClassifier) or not isinstance(data, PhiNetDataModule):
        raise ConfigError(
            f"{name}: the config must make a crackcascade.MultiTaskClassifier on crackcascade.PhiNetDataModule, "
            f"got {type(model).__name__} on {type(data).__name__}"
        )
    trainer.fit(model, datamodule=data)
    checkpoint = tested_checkpoint(trainer)
    trainer.test(model, datamodule=data, ckpt_path=checkpoint, weights_only=not trusted(), verbose=False)
    metrics = dict(model.last_metrics.get("test", {}))
    return {
        "name": name,
        # What the run built, not what it was asked for: the model's heads and the tasks its data labels.
        "tasks": list(model.tasks),
        "data_tasks": list(data.tasks),
        "accuracy": {t: metrics[f"{t}_acc"] for t in tasks if f"{t}_acc" in metrics},
        "test_metrics": metrics,
        "sizes": {t: split_sizes(data, t) for t in tasks},
        "epochs": trainer.current_epoch,
        "tested": checkpoint or "final weights",
        "log_dir": trainer.log_dir,
        "seconds": round(time.perf_counter() - started, 2),
    }


def read_paper(path: Path | None) -> dict[str, float]:
    """The paper's test accuracy per task from ``--paper-json``, keyed by task name; {} without a file."""
    if path is None:
        return {}
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"--paper-json '{path}': {one_line(err)}; give a JSON object of task -> accuracy between 0 and 1"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"--paper-json '{path}': expected a JSON object of task -> accuracy between 0 and 1")
    paper: dict[str, float] = {}
    for key, value in values.items():
        try:
            task = get_task(key).name
        except KeyError:
            raise ConfigError(
                f"--paper-json '{path}': '{key}' is not a task; use one of {', '.join(TASK_NAMES)}"
            ) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(
                f"--paper-json '{path}': {key}: {value!r} is not an accuracy in [0, 1] (give fractions, not per cent)"
            )
        paper[task] = float(value)
    return paper


def table_rows(tasks: Sequence[str], runs: list[dict[str, Any]], paper: dict[str, float]) -> list[dict[str, Any]]:
    """One Table 1 row per task: sizes and the single-task run's accuracy, beside the multi-head run's."""
    single = {run["tasks"][0]: run for run in runs if len(run["tasks"]) == 1 and run["name"].startswith("single")}
    multi = next(run for run in runs if run["name"] == "multi-head")
    rows = []
    for task in tasks:
        sizes = single[task]["sizes"][task]
        rows.append(
            {
                "task": task,
                "classes": get_task(task).num_classes,
                **sizes,
                "paper": paper.get(task),
                "single_task": single[task]["accuracy"].get(task),
                "multi_head": multi["accuracy"].get(task),
            }
        )
    return rows


def _shown(path: Path) -> str:
    """A path as the table names it: relative to the repository where it lies inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(rows: list[dict[str, Any]], heads: int) -> list[str]:
    """The printed table: one line per task, accuracies as fractions to 4 decimals, ``-`` where none."""
    multi = f"ours {heads}-head"
    lines = [
        f"{'task':<16}{'classes':>8}{'train':>9}{'val':>8}{'test':>8}{'paper':>9}{'ours single':>13}{multi:>13}",
    ]
    lines.append("-" * len(lines[0]))
    for row in rows:
        lines.append(
            f"{row['task']:<16}{row['classes']:>8}{row['train']:>9}{row['val']:>8}{row['test']:>8}"
            f"{_cell(row['paper']):>9}{_cell(row['single_task']):>13}{_cell(row['multi_head']):>13}"
        )
    return lines


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The script's options, and the options after ``--`` that go to every run."""
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the recipe of every run")
    parser.add_argument("--data-root", type=Path, help="Phi-Net root (default: the config's data.root)")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), help="tasks to run (default: all eight)")
    parser.add_argument("--paper-json", type=Path, help="the paper's test accuracy per task: JSON, task -> fraction")
    parser.add_argument("--out", type=Path, default=Path("logs/benchmarks/paper_table1.json"))
    parser.add_argument("--quick", action="store_true", help="tiny synthetic data and model, CPU (a smoke run)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv), extra


def run(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Every run of the protocol; returns the JSON document (also written to ``args.out``)."""
    if not args.config.is_file():
        raise ConfigError(f"--config '{args.config}': no such file; give a classifier config such as {DEFAULT_CONFIG}")
    try:
        tasks = list(resolve_tasks(args.tasks))
    except ValueError as err:
        raise ConfigError(f"--tasks: {err}") from None
    paper = read_paper(args.paper_json)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paper_table1_") as scratch:
        workdir = Path(scratch)
        # One device per run: Lightning's multi-GPU launcher would start this whole script again in
        # each process. `-- --trainer.devices N` overrides it, at that cost.
        options = ["--config", str(args.config), "--trainer.devices", "1"]
        data_root = args.data_root
        if args.quick:
            data_root = write_phinet(workdir / "phinet", format="arrays", tasks=tasks, **QUICK_DATA)
            options += quick_options(workdir)
        if data_root is not None:
            options += ["--data.root", str(data_root)]
        options += extra
        # --quick keeps its runs' files in the temporary folder; otherwise the config's logger places them.
        runs = [
            train_and_test(f"single {task}", [task], options, workdir / task if args.quick else None) for task in tasks
        ]
        runs.append(train_and_test("multi-head", tasks, options, workdir / "multi" if args.quick else None))
    if args.quick:
        for record in runs:  # their folder is gone with the temporary one
            record["log_dir"] = None
            record["tested"] = "best checkpoint (removed)" if record["tested"] != "final weights" else "final weights"
    rows = table_rows(tasks, runs, paper)
    document = {
        "config": _shown(args.config),
        "data_root": "synthetic (--quick)" if args.quick else (str(data_root) if data_root else "the config's"),
        "quick": bool(args.quick),
        "quick_data": QUICK_DATA if args.quick else None,
        "overrides": extra,
        "paper_json": str(args.paper_json) if args.paper_json else None,
        "heads": len(tasks),
        "rows": rows,
        "runs": runs,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1))
    return document


def report(document: dict[str, Any]) -> list[str]:
    """The header lines and the table."""
    what = (
        "--quick: synthetic Phi-Net arrays and test_resnet with random weights, 1 epoch: shows the script works, "
        "measures nothing"
        if document["quick"]
        else f"data: {document['data_root']}"
    )
    return [
        f"Table 1 (Bai et al. 2020): test accuracy per task, {len(document['rows'])} single-task networks and one "
        f"{document['heads']}-head network, recipe {document['config']}"
        + (f" + {' '.join(document['overrides'])}" if document["overrides"] else ""),
        what,
        PAPER_SOURCE + (f"; given: {document['paper_json']}" if document["paper_json"] else "; none given"),
        *format_table(document["rows"], document["heads"]),
        f"elapsed {document['elapsed_s']:.1f} s",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the protocol, print Table 1 and write the JSON; a one-line error and status 2 on a bad option or file."""
    args, extra = parse(list(sys.argv[1:] if argv is None else argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    # The runs are built from arguments on purpose, not from this script's command line.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    if args.quick:
        # Lightning's notes about tiny loaders, devices and seeds say nothing about the table.
        for name in ("pytorch_lightning", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*number of training batches.*")
    try:
        document = run(args, extra)
    except Exception as err:
        known = find_error(err)
        if known is None:
            raise
        print(f"paper_table1: error: {one_line(known)}", file=sys.stderr)
        return 2
    print("\n".join(report(document)))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
