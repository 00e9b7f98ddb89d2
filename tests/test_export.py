"""ONNX export: the exported classifier and U-Net give PyTorch's outputs in onnxruntime, with their metadata."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from crackcascade.cli import main
from crackcascade.errors import ConfigError, WeightsError
from crackcascade.export import (
    MAX_ABS_DIFF,
    ClassifierGraph,
    check_parity,
    export_checkpoint,
    export_classifier,
    onnx_session,
    read_metadata,
    torch_outputs,
)
from crackcascade.labels import get_task
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.segmenter import CrackSegmenter

from .models.test_cascade import _save

TRAINED = ["scene", "damage_state", "damage_type"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export_ckpts")
    torch.manual_seed(0)
    classifier = MultiTaskClassifier(backbone="test_resnet")
    classifier._data_tasks = set(TRAINED)  # as after training on data that labels these three only
    unet = CrackSegmenter(encoder_name="tu-test_resnet", classes=["crack", "spalling"])
    unet.threshold.copy_(torch.tensor([0.35, 0.6]))  # as chosen on validation
    return {
        "classifier": _save(classifier, folder / "cls.ckpt", datamodule_hyper_parameters={"image_size": 48}),
        "unet": _save(unet, folder / "unet.ckpt"),
    }


def _images(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture(scope="module")
def exported(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both checkpoints exported once (the dynamo exporter takes seconds): the classifier by the CLI."""
    folder = tmp_path_factory.mktemp("exported")
    out = folder / "models" / "classifier.onnx"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["export", str(checkpoints["classifier"]), str(out)]) == 0
    return {
        "classifier": out,
        "printed": printed.getvalue(),
        "unet": export_checkpoint(checkpoints["unet"], folder / "unet.onnx"),
    }


def test_classifier_export_has_one_named_output_per_trained_head(
    checkpoints: dict[str, Path], exported: dict[str, Any]
) -> None:
    out = exported["classifier"]
    assert "onnxruntime matches PyTorch: max |difference|" in exported["printed"], exported["printed"]
    session = onnx_session(out, threads=1)
    (image,) = session.get_inputs()
    assert (image.name, image.type, image.shape) == ("image", "tensor(uint8)", ["batch", 3, 48, 48])
    assert [o.name for o in session.get_outputs()] == TRAINED, "trained heads only, in the official order"

    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["kind"] == "classifier" and metadata["image_size"] == 48, "the training size from the checkpoint"
    assert [(o["name"], o["classes"]) for o in metadata["outputs"]] == [(t, list(get_task(t).classes)) for t in TRAINED]
    assert metadata["checkpoint"] == str(checkpoints["classifier"])
    assert read_metadata(out) == {k: v for k, v in metadata.items() if k != "checkpoint"}
    assert session.get_modelmeta().custom_metadata_map["crackcascade"] == json.dumps(read_metadata(out))

    classifier = MultiTaskClassifier(backbone="test_resnet")
    classifier.load_state_dict(torch.load(checkpoints["classifier"], weights_only=True)["state_dict"])
    graph = ClassifierGraph(classifier, TRAINED)
    for batch in (1, 5):  # the batch is dynamic
        assert check_parity(graph, session, _images((batch, 3, 48, 48)), metadata) < MAX_ABS_DIFF


def test_unet_export_takes_any_size_and_carries_its_thresholds(
    checkpoints: dict[str, Path], exported: dict[str, Any]
) -> None:
    result = exported["unet"]
    assert result.metadata["classes"] == ["crack", "spalling"]
    assert result.metadata["thresholds"] == {"crack": 0.35, "spalling": 0.6}
    session = onnx_session(result.onnx_path, threads=1)
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert session.get_outputs()[0].shape == ["batch", 2, "height", "width"]
    # Sizes that are not multiples of 32: the reflection padding and the crop are inside the graph.
    for shape in [(1, 3, 45, 70), (2, 3, 97, 33)]:
        images = _images(shape)
        (logits,) = session.run(["logits"], {"image": images.numpy()})
        assert logits.shape == (shape[0], 2, *shape[2:])
        (expected,) = torch_outputs(result.module, images)
        assert np.abs(logits - expected).max() < MAX_ABS_DIFF
    # The segmenter's own forward agrees, not only the module the export result returned.
    unet = CrackSegmenter(encoder_name="tu-test_resnet", classes=["crack", "spalling"]).eval()
    unet.load_state_dict(torch.load(checkpoints["unet"], weights_only=True)["state_dict"])
    assert check_parity(unet, session, _images((1, 3, 64, 50), seed=2), result.metadata) < MAX_ABS_DIFF


def test_float_input_explicit_size_and_a_failing_parity_check(tmp_path: Path) -> None:
    classifier = MultiTaskClassifier(backbone="test_resnet", tasks=["spalling"]).eval()
    metadata = export_classifier(classifier, tmp_path / "c.onnx", image_size=40, input_dtype="float32", opset=19)
    session = onnx_session(tmp_path / "c.onnx", threads=1)
    assert session.get_inputs()[0].type == "tensor(float)" and metadata["input"]["shape"] == ["batch", 3, 40, 40]
    assert metadata["opset"] == 19 and onnx.load(str(tmp_path / "c.onnx")).opset_import[0].version == 19
    images = _images((2, 3, 40, 40)).float()
    assert check_parity(ClassifierGraph(classifier, ["spalling"]), session, images, metadata) < MAX_ABS_DIFF
    other = MultiTaskClassifier(backbone="test_resnet", tasks=["spalling"]).eval()  # other random weights
    with pytest.raises(WeightsError, match="differs from PyTorch by"):
        check_parity(ClassifierGraph(other, ["spalling"]), session, images, metadata)


def test_parity_tolerance_can_scale_with_the_outputs() -> None:
    class Pixels(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.float()  # outputs up to 255, like the large logits of a deep network

    class Shifted:  # a session whose outputs are PyTorch's plus 5e-3
        def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [feed["image"].astype(np.float32) + 5e-3]

    metadata = {"outputs": [{"name": "logits"}]}
    images = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    with pytest.raises(WeightsError, match=r"differs from PyTorch by 0.005 on the same input \(more than 0.0001\)"):
        check_parity(Pixels(), Shifted(), images, metadata)
    assert check_parity(Pixels(), Shifted(), images, metadata, rtol=1e-4) == pytest.approx(5e-3, rel=1e-3)
    with pytest.raises(WeightsError, match=r"more than 0.0001"):  # the scale is the largest |output|, not each one
        check_parity(Pixels(), Shifted(), torch.zeros((1, 3, 4, 4), dtype=torch.uint8), metadata, rtol=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing.ckpt", "{tmp}/m.onnx"], "checkpoint: checkpoint '.*missing.ckpt' not found"),
        (["{unet}", "{tmp}/m.onnx", "--image-size", "64"], "--image-size applies to classifiers"),
        (["{unet}", "{tmp}/m.pt"], "output '.*m.pt' must end in .onnx"),
        (["{other}", "{tmp}/m.onnx"], "holds a model of another kind, not a MultiTaskClassifier or CrackSegmenter"),
        (["{classifier}", "{tmp}/m.onnx", "--opset", "13"], "--opset must be >= 18"),
    ],
)
def test_export_errors_are_one_line(
    args: list[str], message: str, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"classifier": "a.ckpt"}}, other)
    paths: dict[str, Any] = {"tmp": tmp_path, "unet": checkpoints["unet"], "classifier": checkpoints["classifier"]}
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *(a.format(**paths, other=other) for a in args)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("crackcascade: error: "), err
    assert re.search(message, err[0]), err[0]


def test_errors_raise_crackcascade_errors(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no head for task"):
        export_classifier(
            MultiTaskClassifier(backbone="test_resnet", tasks=["scene"]), tmp_path / "x.onnx", tasks=["spalling"]
        )
    with pytest.raises(WeightsError, match="has no crackcascade metadata"):
        path = tmp_path / "plain.onnx"
        onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(path))
        read_metadata(path)


# ---- what docs/export.md says about torch.export and TorchScript ------------------------------------


def test_torch_export_works_for_both_models_with_dynamic_sizes() -> None:
    dynamic = torch.export.Dim.DYNAMIC
    unet = CrackSegmenter(encoder_name="tu-test_resnet").eval()
    program = torch.export.export(
        unet, (_images((2, 3, 69, 75)),), dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},)
    )
    images = _images((1, 3, 45, 70))
    with torch.no_grad():
        assert torch.equal(program.module()(images), unet(images))
        with pytest.raises(Exception, match="Guard failed"):  # as docs/export.md says: not at very small sizes
            program.module()(_images((1, 3, 20, 20)))
    classifier = MultiTaskClassifier(backbone="test_resnet", tasks=["scene", "spalling"]).eval()
    graph = ClassifierGraph(classifier, classifier.tasks)
    program = torch.export.export(graph, (_images((2, 3, 32, 32)),), dynamic_shapes=({0: dynamic},))
    images = _images((3, 3, 32, 32))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(program.module()(images), graph(images), strict=True))


def test_torchscript_trace_of_the_unet_works_and_script_does_not_for_either_model() -> None:
    unet = CrackSegmenter(encoder_name="tu-test_resnet").eval()
    # Lightning's to_torchscript, because torch.jit.trace itself trips over the LightningModule's
    # trainer property; both are deprecated (torch 2.14 warns, Lightning removes it in 2.8).
    with pytest.warns(FutureWarning, match=r"torch.jit.trace` is deprecated"):
        traced = unet.to_torchscript(method="trace", example_inputs=_images((1, 3, 69, 75)))
    images = _images((2, 3, 45, 70))  # another size: the padding amounts were traced as shape arithmetic
    with torch.no_grad():
        assert torch.equal(traced(images), unet(images))
    for module in (unet, MultiTaskClassifier(backbone="test_resnet", tasks=["scene"])):
        with pytest.raises(Exception, match="Unknown type annotation"):
            module.to_torchscript(method="script")
