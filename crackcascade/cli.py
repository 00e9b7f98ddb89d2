"""The ``crackcascade`` command: Lightning CLI subcommands plus ``synthesize``, ``convert`` and ``export``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import SIGTERMException

import crackcascade
from crackcascade.checkpoints import TRUST_ENV, load_checkpoint, trusted
from crackcascade.errors import ConfigError, StoppedError, find_error, one_line
from crackcascade.reliability import RunGuard, checkpoint_dir, preflight
from crackcascade.tracking import push_config, wandb_loggers
from crackcascade.visualize import PredictionWriter

USAGE_EXTRA = """\
crackcascade subcommands:
  fit | validate | test | predict   Lightning CLI (see `crackcascade fit --help`)
  synthesize ROOT [...]             write built-in synthetic Phi-Net data (see `crackcascade synthesize --help`)
  convert IN OUT                    re-save a checkpoint to load without running code (`crackcascade convert -h`)
  export CHECKPOINT OUTPUT.onnx     export a classifier or U-Net to ONNX (see `crackcascade export --help`)

  --trust_checkpoint true           (any subcommand) load checkpoints and weight files that need pickled Python
                                    objects, which can run code from the file; for this command only, never
                                    saved in config.yaml (also CRACKCASCADE_TRUST_CHECKPOINTS=1)
"""

SIGTERM_EXIT = 143
"""Exit status after SIGTERM (128 + 15, as a shell reports a process ended by the signal)."""

_CKPT_KEYWORDS = ("best", "last", "hpc", "registry")


def latest_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The newest ``last.ckpt`` of earlier runs with this trainer's checkpoint folders, or None.

    Lightning's ``ckpt_path="last"`` looks only in the folder of the run being started (a new
    ``version_N``), where there is nothing yet; this looks in every version folder of the same
    logger (``<save_dir>/<name>/*/checkpoints``) or in a callback's fixed ``dirpath``.
    """
    candidates: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        names = {f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"}
        if callback.filename and "{" not in callback.filename:
            names.add(f"{callback.filename}{callback.FILE_EXTENSION}")
        current = Path(checkpoint_dir(trainer, callback))
        folders = [current]
        if callback.dirpath is None and trainer.loggers:
            # <save_dir>/<name>/<version>/checkpoints: every version of this logger.
            folders += sorted(current.parent.parent.glob(f"*/{current.name}"))
        candidates += [folder / name for folder in folders for name in names if (folder / name).is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime, str(p)))


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Write ``config.yaml`` to the log folder as Lightning does, and push the same config to W&B runs.

    The resolved config (every default filled in, as ``--print_config`` shows it) goes into each
    W&B run's config on rank zero, so a run on the W&B site says exactly how it was made. A first
    logger without a folder (``WandbLogger`` without ``save_dir``) gets no ``config.yaml``; its
    run still holds the config.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Save the config once per run (every rank calls this: ``trainer.log_dir`` is a broadcast)."""
        if self.save_to_log_dir and not self.already_saved and trainer.log_dir is None:
            self.save_to_log_dir = False
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Push the resolved config to the W&B runs (Lightning calls this on rank zero only)."""
        if wandb_loggers(trainer):
            push_config(trainer, yaml.safe_load(self.parser.dump(self.config, skip_none=False)))


class CrackcascadeCLI(LightningCLI):
    """LightningCLI with crackcascade's prediction writer, safe checkpoint loading and resumable runs.

    On top of Lightning's: ``--ckpt_path last`` resumes the newest ``last.ckpt`` of earlier runs of
    the same log folder; every checkpoint is loaded with ``weights_only=True`` unless
    ``--trust_checkpoint true``; ``fit`` checks its output folders before it starts; SIGTERM
    ends with a line naming the checkpoint it saved.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the prediction writer's options (``--prediction_writer.output_dir``)."""
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def _parse_ckpt_path(self) -> None:
        """Read the hyper-parameters of ``--ckpt_path`` as Lightning does, but without running code from the file."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or str(ckpt_path).startswith(_CKPT_KEYWORDS) or "://" in str(ckpt_path):
            return
        if not Path(ckpt_path).is_file():
            raise ConfigError(
                f"--ckpt_path '{ckpt_path}': no such file; give a .ckpt a training run wrote, or 'last' to resume "
                "the latest run of this config"
            )
        checkpoint = load_checkpoint(ckpt_path, "--ckpt_path", mmap=True, kind="Lightning checkpoint")
        hparams = dict(checkpoint.get("hyper_parameters", {})) if isinstance(checkpoint, dict) else {}
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _before_run(self, subcommand: str) -> None:
        config = self.config_init[subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = not trusted()
        if config.get("ckpt_path") == "last":
            found = latest_checkpoint(self.trainer)
            if found is None:
                where = ", ".join(
                    str(Path(checkpoint_dir(self.trainer, c)).parent.parent / "*" / "checkpoints")
                    for c in self.trainer.checkpoint_callbacks
                    if isinstance(c, ModelCheckpoint)
                )
                raise ConfigError(
                    f"--ckpt_path last: no last.ckpt of an earlier run in {where or self.trainer.default_root_dir}; "
                    "train first, or give the checkpoint's path"
                )
            checkpoint = load_checkpoint(found, "--ckpt_path", mmap=True, kind="Lightning checkpoint")
            config["ckpt_path"] = str(found)
            if self.trainer.is_global_zero:
                verb = "resuming from" if subcommand == "fit" else f"{subcommand} with"
                epoch, step = checkpoint.get("epoch", "?"), checkpoint.get("global_step", "?")
                print(f"crackcascade: {verb} {found} (epoch {epoch}, global step {step})", file=sys.stderr)
        if subcommand == "fit":
            if self.trainer.is_global_zero:
                preflight(self.trainer, self.model)
            for callback in self.trainer.callbacks:  # type: ignore[attr-defined]
                if isinstance(callback, RunGuard):
                    callback.checked = True

    def before_fit(self) -> None:
        """Resolve ``--ckpt_path last``, load checkpoints weights-only, check the output folders."""
        self._before_run("fit")

    def before_validate(self) -> None:
        """Resolve ``--ckpt_path last`` and load checkpoints weights-only."""
        self._before_run("validate")

    def before_test(self) -> None:
        """Resolve ``--ckpt_path last`` and load checkpoints weights-only."""
        self._before_run("test")

    def before_predict(self) -> None:
        """Resolve ``--ckpt_path last`` and load checkpoints weights-only."""
        self._before_run("predict")

    def _run_subcommand(self, subcommand: str) -> None:
        started = time.time()
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:
            trainer = self.trainer
            saved = _newest_checkpoint(trainer, since=started)
            where = f"epoch {trainer.current_epoch}, global step {trainer.global_step}"
            what = (
                f"saved {saved}; resume with --ckpt_path last"
                if saved
                else "no checkpoint was saved (give a ModelCheckpoint save_on_exception: true)"
            )
            raise StoppedError(f"stopped by SIGTERM at {where}; {what}", SIGTERM_EXIT) from None


def _newest_checkpoint(trainer: pl.Trainer, since: float) -> Path | None:
    folders = {Path(checkpoint_dir(trainer, c)) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)}
    files = [p for folder in folders for p in folder.glob("*.ckpt") if p.stat().st_mtime >= since]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def _take_trust_flag(argv: list[str]) -> tuple[list[str], bool]:
    """Remove ``--trust_checkpoint true|false`` from the arguments, so it never reaches a saved config.

    Trust is a decision about the files of one command; a ``config.yaml`` that carried it would
    silently trust whatever checkpoint a later command names.
    """
    rest: list[str] = []
    trust = False
    items = iter(argv)
    for item in items:
        if item == "--trust_checkpoint" or item.startswith("--trust_checkpoint="):
            value = item.partition("=")[2] if "=" in item else next(items, "")
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"--trust_checkpoint must be true or false, got {value!r}")
            trust = value.lower() in ("true", "1", "yes")
        else:
            rest.append(item)
    return rest, trust


def main(args: Sequence[str] | None = None) -> int:
    """Run ``crackcascade``: ``fit``, ``validate``, ``test``, ``predict``, ``synthesize``, ``convert`` or ``export``.

    Errors crackcascade can explain (bad path, unreadable file, wrong option, a NaN loss) are
    printed as one line on stderr and exit with status 2 instead of a traceback; a run stopped by
    SIGTERM prints where it saved its checkpoint and exits with status 143.

    Args:
        args: Command-line arguments without the program name; ``sys.argv[1:]`` if None.

    Returns:
        Process exit status (0 on success).
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"crackcascade {crackcascade.__version__}")
        return 0
    trust_before = os.environ.get(TRUST_ENV)
    try:
        argv, trust = _take_trust_flag(argv)
        if trust:
            os.environ[TRUST_ENV] = "1"
        if args is None:
            sys.argv[1:] = argv  # LightningCLI reads sys.argv itself (it warns when given both)
        if argv[:1] == ["synthesize"]:
            from crackcascade.data.synthetic import main as synthesize

            return synthesize(argv[1:])
        if argv[:1] == ["convert"]:
            from crackcascade.checkpoints import main as convert

            return convert(argv[1:])
        if argv[:1] == ["export"]:
            from crackcascade.export import main as export

            return export(argv[1:])
        if argv[:1] in (["-h"], ["--help"]):
            print(USAGE_EXTRA)
        CrackcascadeCLI(
            model_class=pl.LightningModule,
            datamodule_class=pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            auto_configure_optimizers=False,
            trainer_defaults={"callbacks": [RunGuard()]},
            # None lets LightningCLI read sys.argv itself (it warns when given both).
            args=None if args is None else argv,
        )
    except Exception as err:
        known = find_error(err)
        if known is None:
            raise
        if isinstance(known, StoppedError):
            print(f"crackcascade: {known}", file=sys.stderr)
            raise SystemExit(known.exit_code) from None
        print(f"crackcascade: error: {one_line(known)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        # --trust_checkpoint holds for this command only (tests and notebooks call main() repeatedly).
        if trust_before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = trust_before
    return 0
