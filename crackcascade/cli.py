"""The ``crackcascade`` command: Lightning CLI subcommands plus ``synthesize``, ``convert`` and ``export``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import SIGTERMException

import crackcascade
from crackcascade.arguments import CrackcascadeParser, OptionError, locate
from crackcascade.callbacks import PredictionWriter, RunGuard
from crackcascade.checkpoints import TRUST_ENV, class_path, import_class, load_checkpoint, saved_class, trusted
from crackcascade.checkpoints import main as convert
from crackcascade.errors import ConfigError, StoppedError, find_error, one_line
from crackcascade.export import main as export
from crackcascade.hardware import default_precision
from crackcascade.models.base import CrackcascadeModule
from crackcascade.outputs import (
    check_writable,
    checkpoint_dir,
    discard_unused_folders,
    missing_folders,
    output_dirs,
    preflight,
)
from crackcascade.synthetic import main as synthesize
from crackcascade.tracking import push_config, wandb_loggers

USAGE_EXTRA = """\
crackcascade subcommands:
  fit | validate | test | predict   Lightning CLI (see `crackcascade fit --help`)
  synthesize ROOT [...]             write built-in synthetic Phi-Net data (see `crackcascade synthesize --help`)
  convert IN OUT                    re-save a checkpoint to load without running code (`crackcascade convert -h`)
  export CHECKPOINT OUTPUT.onnx     export a classifier or U-Net to ONNX (see `crackcascade export --help`)

  --trust_checkpoint true           (any subcommand) load checkpoints and weight files that need pickled Python
                                    objects, which can run code from the file; for this command only, never
                                    saved in config.yaml (also CRACKCASCADE_TRUST_CHECKPOINTS=1)
  --ckpt_path FILE.ckpt             (validate, test, predict; fit resumes) the model's class and settings come from
                                    the checkpoint, also one saved with Trainer.save_checkpoint: --model may be
                                    left out, and must otherwise name the class the checkpoint holds

  exit status                       0 done; 2 a one-line error naming the option, file or folder; 130 stopped by
                                    Ctrl-C, 143 by SIGTERM (both name the checkpoint saved: --ckpt_path last resumes)
"""

SIGTERM_EXIT = 143
"""Exit status after SIGTERM (128 + 15, as a shell reports a process ended by the signal)."""
SIGINT_EXIT = 130
"""Exit status after Ctrl-C (128 + 2, SIGINT)."""

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
    the same log folder; ``--ckpt_path`` gives the model's class (``--model`` may be left out, or
    must match); every checkpoint is loaded with ``weights_only=True`` unless
    ``--trust_checkpoint true``; every subcommand checks its output folders before it starts, and a
    run that fails before it produced anything removes the log folders it made; a bad option is
    one line (:mod:`crackcascade.arguments`); SIGTERM and Ctrl-C end with a line naming the
    checkpoint saved.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the prediction writer's options (``--prediction_writer.output_dir``)."""
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Lightning's parser, told of the command's other parsers (its errors suggest their options)."""
        parser = super().init_parser(**kwargs)
        if isinstance(parser, CrackcascadeParser):
            self.parsers = [*getattr(self, "parsers", []), parser]
            for member in self.parsers:
                member.family = self.parsers
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse as Lightning does; a bad option set in a ``--config`` file names that file."""
        try:
            super().parse_arguments(parser, args)
        except OptionError as err:
            argv = sys.argv[1:] if args is None else args
            raise locate(err, [str(a) for a in argv] if isinstance(argv, list | tuple) else []) from None

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Lightning's trainer, model and data options, with ``--model`` optional while parsing.

        A checkpoint that records its class (``--ckpt_path``) supplies the model; a command with
        neither is refused in :meth:`before_instantiate_classes`, with one line.
        """
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        model_class = self.model_class or pl.LightningModule
        parser.add_lightning_class_args(model_class, "model", subclass_mode=self.subclass_mode_model, required=False)
        data_class = self.datamodule_class or pl.LightningDataModule
        parser.add_lightning_class_args(data_class, "data", subclass_mode=self.subclass_mode_data)

    def _parse_ckpt_path(self) -> None:
        """Put the model class and hyper-parameters of ``--ckpt_path`` into the config, without running its code.

        Lightning's own version of this step (no public hook covers it, so this is the one
        private method overridden) loads the file with pickle and knows the class only from the
        ``_class_path`` that its CLI saves among the hyper-parameters. Here the class is the one
        the config names (``--model``), checked against the class the checkpoint records
        (``_class_path``, or :data:`~crackcascade.checkpoints.CLASS_KEY` that crackcascade's models
        save, also from ``Trainer.save_checkpoint``); without ``--model``, the recorded one.
        """
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
        if not isinstance(checkpoint, dict):
            return
        hparams = {k: v for k, v in dict(checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
        model = config.get("model")
        asked = model.get("class_path") if model is not None else None
        target = _checkpoint_model(ckpt_path, checkpoint, asked)
        if target is None:
            return
        update: dict[str, object] = {"class_path": target}
        if hparams:
            update["init_args"] = hparams
        try:
            self.config = self.parser.parse_object({subcommand: {"model": update}}, self.config)
        except ConfigError as err:
            detail = str(err).split("; see crackcascade")[0]
            raise ConfigError(
                f"--ckpt_path '{ckpt_path}': its hyper-parameters do not fit {target} ({detail}); it was saved by "
                "another version of the model: use that version, or retrain"
            ) from None

    def before_instantiate_classes(self) -> None:
        """Refuse a command that names no model: neither ``--model``, a config, nor a checkpoint that records one."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        if config.get("model") is None:
            raise ConfigError(
                "--model is required: give --model crackcascade.MultiTaskClassifier (or CrackSegmenter, CrackCascade), "
                f"a --config file that sets model, or a --ckpt_path; see crackcascade {subcommand} --help"
            )

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
                    callback.preflight.done = True
        elif self.trainer.is_global_zero:
            # validate/test/predict write the config and logs (metrics, confusion matrices) there.
            for folder, role in output_dirs(self.trainer).items():
                if role == "logs":
                    check_writable(folder, role)

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
        # Private, as before: no public hook runs around a subcommand (an exception skips after_<subcommand>).
        started = time.time()
        created = missing_folders(self.trainer) if self.trainer.is_global_zero else set()
        try:
            super()._run_subcommand(subcommand)
        except BaseException as err:
            if self.trainer.is_global_zero:
                discard_unused_folders(self.trainer, created)
            if isinstance(err, SIGTERMException):
                raise StoppedError(_stopped_line(self.trainer, subcommand, "SIGTERM", started), SIGTERM_EXIT) from None
            # Lightning answers Ctrl-C with sys.exit(1) from inside its KeyboardInterrupt handler.
            if isinstance(err, KeyboardInterrupt) or (
                isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt)
            ):
                line = _stopped_line(self.trainer, subcommand, "Ctrl-C (SIGINT)", started)
                raise StoppedError(line, SIGINT_EXIT) from None
            raise


def _stopped_line(trainer: pl.Trainer, subcommand: str, signal: str, started: float) -> str:
    """What a run stopped from outside says: where it stopped, the checkpoint it saved and how to resume."""
    if subcommand != "fit":
        return f"{subcommand} stopped by {signal}"
    saved = _newest_checkpoint(trainer, since=started)
    where = f"epoch {trainer.current_epoch}, global step {trainer.global_step}"
    what = (
        f"saved {saved}; resume with --ckpt_path last"
        if saved
        else "no checkpoint was saved (give a ModelCheckpoint save_on_exception: true)"
    )
    return f"stopped by {signal} at {where}; {what}"


def _checkpoint_model(path: str, checkpoint: dict, asked: str | None) -> str | None:
    """The model class for ``--ckpt_path``: ``asked`` (the config's) if the checkpoint holds one, else the recorded one.

    Raises:
        ConfigError: One line naming the checkpoint, the class it holds and the class the config
            asks for, when they differ; or saying to pass ``--model`` when neither names one.
    """
    saved, recorded = saved_class(checkpoint)
    if asked is None:
        if recorded:
            import_class(saved, f"--ckpt_path '{path}'")  # type: ignore[arg-type]
            return saved
        if not checkpoint.get("hyper_parameters"):
            return None  # nothing to read; the config must name the model
        hint = f"--model {saved}" if saved else "--model <its LightningModule class>"
        raise ConfigError(
            f"--ckpt_path '{path}' does not record its model class (saved before crackcascade recorded it); pass {hint}"
        )
    if saved is None:
        return asked
    asked_class = import_class(asked)
    saved_class_ = import_class(saved, f"--ckpt_path '{path}'")
    if issubclass(asked_class, saved_class_):
        return asked
    judged = "" if recorded else " (judging by its hyper-parameters)"
    raise ConfigError(
        f"--ckpt_path '{path}' holds a {saved_class_.__name__} checkpoint{judged}, but the config asks for model "
        f"{asked_class.__name__}; pass --model {class_path(saved_class_)} and data of its kind, or the config.yaml "
        "of the run that trained it"
    )


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


def build_cli(args: Sequence[str] | None = None, *, run: bool = True) -> CrackcascadeCLI:
    """The ``crackcascade`` command's Lightning CLI, built as ``crackcascade fit|validate|test|predict`` builds it.

    With ``run=False`` the arguments name no subcommand (``--config FILE --data.root DIR ...``)
    and nothing runs: the returned CLI holds the model, datamodule and trainer exactly as the
    config makes them (seeded by its ``seed_everything``), for a script to call ``trainer.fit``
    and ``trainer.test`` itself (``benchmarks/paper_table1.py`` does). Errors are raised, not
    turned into exit statuses; :func:`main` does that.

    Args:
        args: Command-line arguments without the program name; None reads ``sys.argv``.
        run: Run the subcommand the arguments name (True), or only build the objects.

    Returns:
        The CLI, with ``.model``, ``.datamodule``, ``.trainer`` and ``.config``.
    """
    return CrackcascadeCLI(
        # crackcascade's models share this root; subclass mode takes any of them by name or path.
        model_class=CrackcascadeModule,
        datamodule_class=pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        parser_class=CrackcascadeParser,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        auto_configure_optimizers=False,
        # bf16 mixed precision where the hardware runs it natively (about 2-3x faster training
        # steps on such CPUs and GPUs), else full precision; --trainer.precision overrides it.
        trainer_defaults={"callbacks": [RunGuard()], "precision": default_precision()},
        args=None if args is None else list(args),
        run=run,
    )


def main(args: Sequence[str] | None = None) -> int:
    """Run ``crackcascade``: ``fit``, ``validate``, ``test``, ``predict``, ``synthesize``, ``convert`` or ``export``.

    Errors crackcascade can explain (bad path, unreadable file, wrong option, a NaN loss) are
    printed as one line on stderr and exit with status 2 instead of a traceback; a run stopped by
    SIGTERM or Ctrl-C prints where it saved its checkpoint and exits with status 143 or 130.

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
            return synthesize(argv[1:])
        if argv[:1] == ["convert"]:
            return convert(argv[1:])
        if argv[:1] == ["export"]:
            return export(argv[1:])
        if argv[:1] in (["-h"], ["--help"]):
            print(USAGE_EXTRA)
        # None lets LightningCLI read sys.argv itself (it warns when given both).
        build_cli(None if args is None else argv)
    except KeyboardInterrupt:
        # Outside a Lightning run (which reports where it stopped): while parsing, loading, synthesizing.
        print("crackcascade: stopped by Ctrl-C (SIGINT)", file=sys.stderr)
        raise SystemExit(SIGINT_EXIT) from None
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
