"""The concrete-crack writer: a set in the layout of Özgenel's (``Positive/``, ``Negative/``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crackcascade.data.concrete import CONCRETE_CRACK_FOLDERS
from crackcascade.synthetic.drawing import pick
from crackcascade.synthetic.masks import MASK_STREAM
from crackcascade.synthetic.rendering import check_size, render_scene
from crackcascade.synthetic.scene import CONCRETE, CRACK_TYPES, PIXEL
from crackcascade.synthetic.writers import check_integers, mapper

_CONCRETE_STREAM = MASK_STREAM + 1  # seed stream of the concrete-crack sets, distinct from the other writers'


@dataclass(frozen=True)
class _ConcreteJob:
    """One image of a concrete-crack set: its seed, whether it shows a crack, and its file."""

    seed: int
    folder: int  # index in CONCRETE_CRACK_FOLDERS
    index: int
    size: int
    crack: bool
    path: str


def _run_concrete_job(job: _ConcreteJob) -> None:
    rng = np.random.default_rng([job.seed, _CONCRETE_STREAM, job.folder, job.index])
    if job.crack:
        # A crack type is asked for, and spalling ruled out, because "damaged" alone may draw a
        # spalling-only scene: Özgenel's positives are all cracks.
        attributes: dict[str, Any] = {"damaged": True, "damage_type": pick(rng, CRACK_TYPES), "spalling": False}
    else:
        attributes = {"damaged": False}
    # Distractors on both sides, so that a joint, wire or stain does not give the class away.
    scene = render_scene(rng, job.size, scale=PIXEL, material=CONCRETE, distractors=True, **attributes)
    Image.fromarray(scene.image).save(job.path, format="JPEG", quality=95)


def write_concrete_cracks(root: str | Path, *, n: int = 40, size: int = 227, seed: int = 0, workers: int = 1) -> Path:
    """Write a synthetic set in the layout of Özgenel's concrete-crack set.

    Writes ``root/Positive/<index:05d>.jpg``, pixel-scale concrete close-ups with cracks (flexural,
    shear or combined, minor or moderate, no spalling), and ``root/Negative/<index:05d>.jpg``,
    undamaged concrete close-ups; both with distractors (joints, stains, shadows, wires), JPEG
    quality 95, the layout :class:`~crackcascade.data.datamodules.ConcreteCrackDataModule` reads.
    Each image has its own seed (``seed``, folder, index), so the files are identical for the
    same arguments whatever ``workers``.

    Args:
        root: Output folder (created if needed; files of the same names are overwritten).
        n: Images per class (>= 1).
        size: Image side in pixels (>= 32; 227 as in the original set).
        seed: Base seed (>= 0).
        workers: Processes rendering in parallel (>= 1).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: With a one-line message naming the bad option.
    """
    check_integers(n=(n, 1), seed=(seed, 0), workers=(workers, 1))
    size = check_size(size)
    root = Path(root)
    jobs = []
    for folder_index, (folder, crack) in enumerate(CONCRETE_CRACK_FOLDERS):
        (root / folder).mkdir(parents=True, exist_ok=True)
        jobs += [
            _ConcreteJob(int(seed), folder_index, i, size, crack, str(root / folder / f"{i:05d}.jpg"))
            for i in range(int(n))
        ]
    with mapper(_run_concrete_job, int(workers)) as run:
        for _ in run(jobs):
            pass
    return root
