from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from crackcascade.models.segmenter import CrackSegmenter
from crackcascade.tiling import pad_to_multiple, predict_tiled, window_starts


@pytest.fixture(scope="module")
def segmenter() -> CrackSegmenter:
    torch.manual_seed(0)
    return CrackSegmenter(encoder_name="tu-test_resnet", classes=["crack", "spalling"]).eval()


def _image(height: int, width: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def _constant(*values: float):
    def forward(tiles: Tensor) -> Tensor:
        out = torch.empty(tiles.shape[0], len(values), *tiles.shape[-2:])
        for c, value in enumerate(values):
            out[:, c] = value
        return out

    return forward


@pytest.mark.parametrize("size", [(64, 64), (50, 70), (97, 128), (13, 9)])
def test_image_within_one_tile_is_exactly_the_whole_image_forward(
    segmenter: CrackSegmenter, size: tuple[int, int]
) -> None:
    image = _image(*size)
    with torch.no_grad():
        whole = torch.sigmoid(segmenter(image[None]).float())[0]
    forward = lambda x: torch.sigmoid(segmenter(x).float())  # noqa: E731
    tiled = predict_tiled(forward, image, tile_size=128, overlap=32, multiple=1)
    assert tiled.shape == (2, *size) and tiled.dtype == torch.float32
    assert torch.equal(tiled, whole)
    assert torch.equal(segmenter.segment(image), whole)


@pytest.mark.parametrize("size", [(50, 70), (13, 9)])
def test_image_within_one_tile_is_padded_for_a_forward_that_needs_multiples_of_32(
    segmenter: CrackSegmenter, size: tuple[int, int]
) -> None:
    def unet(x: Tensor) -> Tensor:
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0
        return torch.sigmoid(segmenter.model(segmenter.normalize(x)))

    image = _image(*size)
    with torch.no_grad():
        whole = unet(pad_to_multiple(image[None].float()))[0, :, : size[0], : size[1]]
    assert torch.equal(predict_tiled(unet, image, tile_size=128, overlap=32), whole)


def test_blending_is_a_partition_of_unity() -> None:
    # 97x131 with 32 px tiles: several windows per side, the last ones overlapping by more than
    # `overlap`. Powers of two scale the weights exactly, so any weight error shows up exactly.
    out = predict_tiled(_constant(0.25, 0.5), _image(97, 131), tile_size=32, overlap=8, batch_size=3)
    assert out.shape == (2, 97, 131)
    assert torch.equal(out[0], torch.full((97, 131), 0.25)) and torch.equal(out[1], torch.full((97, 131), 0.5))


def test_overlap_is_blended_with_a_raised_cosine_ramp() -> None:
    # Width 56 with 32 px tiles and overlap 8: windows at x=0 and x=24 share columns 24..31.
    calls = iter([10.0, 20.0])

    def per_tile(tiles: Tensor) -> Tensor:
        return torch.stack([torch.full((1, *tiles.shape[-2:]), next(calls)) for _ in range(len(tiles))])

    out = predict_tiled(per_tile, _image(32, 56), tile_size=32, overlap=8, batch_size=1)[0, 0]
    assert torch.all(out[:24] == 10.0) and torch.all(out[32:] == 20.0)
    ramp = torch.tensor([0.5 - 0.5 * math.cos(math.pi * (j + 0.5) / 8) for j in range(8)])
    assert torch.allclose(out[24:32], 10.0 + 10.0 * ramp, atol=1e-5)


def test_pointwise_model_tiled_equals_full_image() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 2, 1)
    image = _image(150, 201, seed=3)

    def forward(x: Tensor) -> Tensor:
        return torch.sigmoid(conv(x / 255))

    with torch.no_grad():
        full = forward(image[None].float())[0]
    tiled = predict_tiled(forward, image, tile_size=64, overlap=16, batch_size=4)
    assert torch.allclose(tiled, full, atol=1e-6, rtol=0)


def test_3x3_model_tiled_equals_full_image_away_from_tile_edges() -> None:
    # A zero-padded 3x3 conv is wrong only on each tile's own border; wherever every covering
    # tile sees the pixel's whole neighbourhood, the blend must reproduce the full-image output.
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 1, 3, padding=1)
    image = _image(100, 90, seed=4)
    tile, overlap = 64, 16
    with torch.no_grad():
        full = conv(image[None].float())[0]
    tiled = predict_tiled(conv, image, tile_size=tile, overlap=overlap, batch_size=2)
    keep = torch.ones(100, 90, dtype=torch.bool)
    for axis, size in ((0, 100), (1, 90)):
        for start in window_starts(size, tile, overlap):
            for edge in (start, start + tile - 1):
                if 0 < edge < size - 1:
                    keep.index_fill_(axis, torch.tensor([edge]), False)
    assert keep.sum() > 0.8 * keep.numel()
    assert torch.allclose(tiled[:, keep], full[:, keep], atol=1e-3, rtol=1e-5)
    assert not torch.allclose(tiled, full, atol=1e-3, rtol=1e-5)  # the excluded pixels do differ


def test_odd_sizes_keep_their_shape_and_batching_does_not_change_results(segmenter: CrackSegmenter) -> None:
    image = _image(97, 131, seed=5)
    forward = lambda x: torch.sigmoid(segmenter(x).float())  # noqa: E731
    outputs = [predict_tiled(forward, image, tile_size=64, overlap=16, batch_size=b) for b in (1, 3, 64)]
    assert all(out.shape == (2, 97, 131) for out in outputs)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6) and torch.allclose(outputs[0], outputs[2], atol=1e-6)
    assert torch.allclose(predict_tiled(forward, image.float(), tile_size=64, overlap=16), outputs[0], atol=1e-6)


def test_window_starts_cover_the_side_with_the_last_window_flush() -> None:
    for size in (31, 64, 65, 100, 4000):
        starts = window_starts(size, 64, 16)
        assert starts[0] == 0 and starts[-1] == max(size - 64, 0)
        assert all(b - a <= 48 for a, b in itertools.pairwise(starts))  # overlap >= 16
        covered = torch.zeros(size, dtype=torch.bool)
        for start in starts:
            covered[start : start + 64] = True
        assert covered.all()


def test_pad_to_multiple_reflects_and_falls_back_to_replicate() -> None:
    image = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)
    padded = pad_to_multiple(image, 4)
    assert padded.shape == (2, 4, 8)
    assert torch.equal(padded[:, :3, :5], image) and torch.equal(padded[:, 3, :5], image[:, 1])  # reflected row
    tiny = pad_to_multiple(torch.ones(3, 2, 2), 32)
    assert tiny.shape == (3, 32, 32) and torch.all(tiny == 1)


def test_bad_tiling_options() -> None:
    image = _image(40, 40)
    with pytest.raises(ValueError, match="tile_size must be a positive multiple of 32"):
        predict_tiled(_constant(1.0), image, tile_size=48)
    with pytest.raises(ValueError, match="overlap must be in"):
        predict_tiled(_constant(1.0), image, tile_size=32, overlap=32)
    with pytest.raises(ValueError, match="one \\(channels, H, W\\) image"):
        predict_tiled(_constant(1.0), image[None], tile_size=32)
    with pytest.raises(ValueError, match="must keep the batch size and the spatial size"):
        predict_tiled(lambda x: x[..., :10], image, tile_size=32, overlap=8)
