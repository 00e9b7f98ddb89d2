"""The ``crackcascade`` command: Lightning CLI subcommands plus ``synthesize``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

import crackcascade
from crackcascade.errors import find_error, one_line
from crackcascade.tracking import push_config, wandb_loggers
from crackcascade.visualize import PredictionWriter

USAGE_EXTRA = """\
crackcascade subcommands:
  fit | validate | test | predict   Lightning CLI (see `crackcascade fit --help`)
  synthesize ROOT [...]             write built-in synthetic Phi-Net data (see `crackcascade synthesize --help`)
"""


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
    """LightningCLI with crackcascade's prediction writer and defaults."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the prediction writer's options (``--prediction_writer.output_dir``)."""
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")


def main(args: Sequence[str] | None = None) -> int:
    """Run ``crackcascade``: ``fit``, ``validate``, ``test``, ``predict`` or ``synthesize``.

    Errors crackcascade can explain (bad path, unreadable file, wrong option) are printed as one
    line on stderr and exit with status 2 instead of a traceback.

    Args:
        args: Command-line arguments without the program name; ``sys.argv[1:]`` if None.

    Returns:
        Process exit status (0 on success).
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"crackcascade {crackcascade.__version__}")
        return 0
    try:
        if argv[:1] == ["synthesize"]:
            from crackcascade.data.synthetic import main as synthesize

            return synthesize(argv[1:])
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
            # None lets LightningCLI read sys.argv itself (it warns when given both).
            args=None if args is None else argv,
        )
    except Exception as err:
        known = find_error(err)
        if known is None:
            raise
        print(f"crackcascade: error: {one_line(known)}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0
