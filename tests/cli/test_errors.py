"""What the command says when it cannot go on: one line naming the option, file or folder, and what to do.

Argument-parsing errors (bad values, unknown options, bad config files) are one line instead of
jsonargparse's usage dump; Ctrl-C during ``fit`` names the checkpoint to resume from; a run that
fails before it produced anything leaves no empty log folder behind; ``predict`` checks its
output folder before it predicts.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml

from crackcascade.cli import main
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.outputs import discard_unused_folders

from ..conftest import CONF
from ..integration.test_faults import KILL_STEP, _args, _start, _wait_for, data  # noqa: F401 (data: the fault tests' fixture)


def _error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """The one line a failing command prints (exit status 2, no usage dump, no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "an error was printed"
    assert not any(line.startswith(("usage:", "tip:", "Traceback")) for line in err), err
    return err[-1]


# ---- argument parsing ---------------------------------------------------------------------------

SEE = "see crackcascade fit --help"
SEE_MODEL = "see crackcascade fit --model.help crackcascade.MultiTaskClassifier"

# (extra arguments after `fit --config tests/conf/multitask.yaml --data.root <phinet>`, the line)
CASES = [
    (["--model.lr", "abc"], f"--model.lr: expected a number, got 'abc'; {SEE}"),
    (["--model.lr=abc"], f"--model.lr: expected a number, got 'abc'; {SEE}"),
    (["--model.lrr", "0.1"], f"unknown option --model.lrr (did you mean --model.lr?); {SEE_MODEL}"),
    (["--model.foo", "1"], f"unknown option --model.foo; {SEE_MODEL}"),
    (["--model.optimizer", "rmsprop"], f"--model.optimizer: expected one of sgd, adamw, adam, got 'rmsprop'; {SEE}"),
    (["--model.compile", "maybe"], f"--model.compile: expected true or false, got 'maybe'; {SEE}"),
    (["--trainer.max_epochz", "3"], f"unknown option --trainer.max_epochz (did you mean --trainer.max_epochs?); {SEE}"),
    (["--trainer.max_epochs", "x"], f"--trainer.max_epochs: expected an integer or null, got 'x'; {SEE}"),
    (["--data.batch_size", "x"], f"--data.batch_size: expected an integer, got 'x'; {SEE}"),
    (["--data.format", "xyz"], f"--data.format: expected one of auto, arrays, folders, csv, got 'xyz'; {SEE}"),
    (
        ["--model", "MultiTaskClasifier"],
        "--model: no class 'MultiTaskClasifier' (did you mean MultiTaskClassifier?); give a class name or import "
        f"path such as crackcascade.CrackSegmenter; {SEE}",
    ),
    (["--no_such_option", "1"], f"unknown option --no_such_option; {SEE}"),
    (["stray"], f"unexpected argument 'stray' (options start with --); {SEE}"),
]


@pytest.mark.parametrize(("extra", "message"), CASES)
def test_bad_options_are_one_line(
    extra: list[str], message: str, phinet_roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["fit", "--config", str(CONF / "multitask.yaml"), "--data.root", str(phinet_roots["arrays"]),
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    assert _error(capsys, [*base, *extra]) == f"crackcascade: error: {message}"
    assert not list(tmp_path.iterdir()), "refused before anything was written"


def test_missing_classes_and_subcommands_are_one_line(
    phinet_roots: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(phinet_roots["arrays"])
    assert _error(capsys, ["fitt"]) == (
        "crackcascade: error: unknown subcommand 'fitt' (did you mean fit?); choose one of fit, validate, test, "
        "predict, synthesize, convert, export; see crackcascade --help"
    )
    assert _error(capsys, ["fit", "--model", "crackcascade.MultiTaskClassifier"]) == (
        "crackcascade: error: --data is required: give --data crackcascade.PhiNetDataModule or a --config file that "
        "sets it; see crackcascade fit --help"
    )
    assert _error(capsys, ["fit", "--data.root", root]) == (
        "crackcascade: error: --data.root: no data class given to take it; give --data <class> first "
        "(e.g. --data crackcascade.PhiNetDataModule) or a --config that sets data; see crackcascade fit --help"
    )
    assert _error(capsys, ["test", "--data", "crackcascade.PhiNetDataModule", "--data.root", root]) == (
        "crackcascade: error: --model is required: give --model crackcascade.MultiTaskClassifier (or CrackSegmenter, "
        "CrackCascade), a --config file that sets model, or a --ckpt_path; see crackcascade test --help"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  init_args:\n    lr: abc\n", "model.lr in --config '{path}': expected a number, got 'abc'; " + SEE),
        ("trainer:\n  max_epochz: 3\n",
         "unknown option trainer.max_epochz in --config '{path}' (did you mean trainer.max_epochs?); " + SEE),
        ("model:\n  init_args:\n    optimiser: sgd\n",
         "unknown option model.optimiser in --config '{path}' (did you mean model.optimizer?); " + SEE_MODEL),
        ("trainer:\n  max_epochs: [1\n",
         "--config '{path}': not valid YAML (while parsing a flow sequence at line 2, column 15: expected ',' or ']', "
         "but got '<stream end>' at line 3, column 1); fix the file"),
    ],
)  # fmt: skip
def test_bad_config_files_name_the_file_and_key(
    text: str, message: str, phinet_roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(text)
    args = ["fit", "--config", str(CONF / "multitask.yaml"), "--config", str(mine),
            "--data.root", str(phinet_roots["arrays"])]  # fmt: skip
    assert _error(capsys, args) == "crackcascade: error: " + message.format(path=mine)
    missing = tmp_path / "nope.yaml"
    assert _error(capsys, ["fit", "--config", str(missing)]) == (
        f"crackcascade: error: --config: file does not exist: '{missing}'"
    )


def test_help_and_print_config_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--model CONFIG | CLASS_PATH_OR_NAME | .INIT_ARG_NAME VALUE" in out and "--trainer.max_epochs" in out
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(CONF / "multitask.yaml"), "--model.lr", "0.25", "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "crackcascade.MultiTaskClassifier"
    assert printed["model"]["init_args"]["lr"] == 0.25


# ---- Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(data: Path, tmp_path: Path) -> None:  # noqa: F811
    marker = tmp_path / "paused.json"
    # A child inherits an ignored SIGINT (a shell's background job) and would not stop: let it take Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = _start(data, tmp_path, marker, until_sigterm=False)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    _wait_for(marker, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"crackcascade: stopped by Ctrl-C (SIGINT) at epoch 1, global step {KILL_STEP}; saved {last}; "
        "resume with --ckpt_path last"
    )
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, KILL_STEP), "the checkpoint is from where it stopped"


# ---- failed runs leave no empty log folders -------------------------------------------------------


@pytest.mark.parametrize("logger", ["default", "csv"])
def test_a_run_that_fails_before_training_leaves_no_log_folder(
    logger: str, phinet_roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    kept = out / "lightning_logs" / "version_0" / "notes.txt"  # a user's file in an earlier version folder
    kept.parent.mkdir(parents=True)
    kept.write_text("mine")
    loggers = ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out)] if logger == "csv" else []
    base = ["fit", "--config", str(CONF / "multitask.yaml"), "--trainer.default_root_dir", str(out), *loggers]
    failures = [
        (["--data.root", str(tmp_path / "nowhere")], "data.root"),
        # Caught only once the data is set up, after the loggers made their folder and the config was saved.
        (["--data.root", str(phinet_roots["arrays"]), "--model.tasks", "[scene]"], "model.tasks has no head"),
    ]
    for extra, reason in failures:
        for _ in range(2):
            assert reason in _error(capsys, [*base, *extra])
            assert sorted(p.relative_to(out) for p in out.rglob("*")) == [
                Path("lightning_logs"), Path("lightning_logs/version_0"), Path("lightning_logs/version_0/notes.txt"),
            ]  # fmt: skip
    fresh = tmp_path / "fresh"
    _error(capsys, ["fit", "--config", str(CONF / "multitask.yaml"), "--trainer.default_root_dir", str(fresh),
                    "--data.root", str(phinet_roots["arrays"]), "--model.tasks", "[scene]"])  # fmt: skip
    assert not fresh.exists(), "the folders the run made, up to its default_root_dir, are gone"


def test_only_folders_the_run_made_that_hold_bookkeeping_are_removed(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    empty, with_file, before = tmp_path / "a" / "v0", tmp_path / "b" / "v0", tmp_path / "c"
    for folder, files in ((empty, ["config.yaml", "hparams.yaml", "events.out.tfevents.1.x"]),
                          (with_file, ["config.yaml", "metrics.csv"]), (before, ["config.yaml"])):  # fmt: skip
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_text("x")
    created = {empty, empty.parent, with_file, with_file.parent}
    assert sorted(discard_unused_folders(trainer, created)) == [empty.parent, empty]
    assert (with_file / "metrics.csv").is_file() and (with_file / "config.yaml").is_file()
    assert (before / "config.yaml").is_file(), "a folder that existed before the run is not the run's"


# ---- predict checks where it writes before it predicts ------------------------------------------


@pytest.fixture(scope="module")
def trained(phinet_roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    main(["fit", "--config", str(CONF / "multitask.yaml"), "--data.root", str(phinet_roots["arrays"]),
          "--trainer.default_root_dir", str(out)])  # fmt: skip
    return out / "lightning_logs" / "version_0"


@pytest.mark.parametrize("where", ["output_dir", "default_root_dir"])
def test_predict_into_an_unwritable_folder_fails_before_predicting(
    where: str, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(photos / "a.png")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder: even root cannot create a folder under it")
    calls: list[int] = []
    predict_step = MultiTaskClassifier.predict_step

    def counting(self: MultiTaskClassifier, *args: object, **kwargs: object) -> object:
        calls.append(1)
        return predict_step(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MultiTaskClassifier, "predict_step", counting)
    args = ["predict", "--config", str(trained / "config.yaml"), "--ckpt_path", str(trained / "checkpoints/last.ckpt"),
            "--data.predict_root", str(photos)]  # fmt: skip
    if where == "output_dir":
        logs = tmp_path / "logs"
        line = _error(capsys, [*args, "--trainer.default_root_dir", str(logs), "--trainer.logger", "false",
                               "--prediction_writer.output_dir", str(blocker / "out")])  # fmt: skip
        assert line == (
            f"crackcascade: error: cannot write the predictions folder '{blocker / 'out'}' ({blocker} is a file); "
            "choose a writable --prediction_writer.output_dir"
        )
    else:
        line = _error(capsys, [*args, "--trainer.default_root_dir", str(blocker / "logs")])
        assert line == (
            f"crackcascade: error: cannot write the logs folder '{blocker / 'logs' / 'lightning_logs' / 'version_0'}' "
            f"({blocker} is a file); choose a writable --trainer.default_root_dir or logger save_dir"
        )
    assert not calls, "nothing was predicted"
    assert not list(tmp_path.rglob("predictions.json"))
    # The same command with a writable folder predicts (the check is not what stops it).
    out = tmp_path / "writable"
    main([*args, "--trainer.default_root_dir", str(tmp_path / "ok"), "--prediction_writer.output_dir", str(out)])
    assert calls and [Path(r["path"]).name for r in json.loads((out / "predictions.json").read_text())] == ["a.png"]
