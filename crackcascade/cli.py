"""The ``crackcascade`` command: Lightning CLI subcommands plus ``synthesize`` and ``export``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

import crackcascade
from crackcascade.errors import find_error, one_line
from crackcascade.visualize import PredictionWriter

USAGE_EXTRA = """\
crackcascade subcommands:
  fit | validate | test | predict   Lightning CLI (see `crackcascade fit --help`)
  synthesize ROOT [...]             write built-in synthetic Phi-Net data (see `crackcascade synthesize --help`)
  export CHECKPOINT OUTPUT.onnx     export a classifier or U-Net to ONNX (see `crackcascade export --help`)
"""


class CrackcascadeCLI(LightningCLI):
    """LightningCLI with crackcascade's prediction writer and defaults."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the prediction writer's options (``--prediction_writer.output_dir``)."""
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")


def main(args: Sequence[str] | None = None) -> int:
    """Run ``crackcascade``: ``fit``, ``validate``, ``test``, ``predict``, ``synthesize`` or ``export``.

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
