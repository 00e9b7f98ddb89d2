"""Procedural Phi-Net-like photos of structures with known damage, labels and masks.

The generator draws, with numpy and PIL only, the three Phi-Net scene scales:

* ``pixel``: a close-up of a concrete, masonry or steel surface filling the frame;
* ``object``: one structural member (beam, column, wall or something else such as a brace or a
  slab edge) in front of sky, ground and dim adjacent surfaces;
* ``structural``: a building facade with storeys and a window grid, intact, partially collapsed
  (a corner missing, a hanging fragment and a rubble heap) or globally collapsed (a rubble pile).

Damage is drawn with known geometry: cracks are branching random walks of known width (also
drawn into a crack mask) whose orientation relative to the member axis gives the damage type,
and spalling is an irregular rough patch (drawn into a spalling mask). Wires, joints, shadows
and stains appear in damaged and undamaged scenes alike, so "a dark thin line" alone is not a
crack. All eight Phi-Net labels are derived from what was drawn.

Every image depends only on its own seed, so the writers give byte-identical files for the same
arguments whatever the number of worker processes. ``crackcascade synthesize`` (:func:`main`)
writes a set in the PHI Challenge array layout, as class folders or as CSV manifests, or with
``--masks`` a crack-segmentation set per scale (:func:`write_crack_masks`: COCO or mask PNGs).

The synthetic data modules (:class:`SyntheticPhiNetDataModule`, :class:`SyntheticCrackMaskDataModule`)
write such a set to their root on first use and read it with the real readers.
"""

from crackcascade.synthetic.cli import main
from crackcascade.synthetic.concrete import write_concrete_cracks
from crackcascade.synthetic.datamodules import (
    SYNTHETIC_MARKER,
    SyntheticCrackMaskDataModule,
    SyntheticPhiNetDataModule,
    prepare_synthetic,
)
from crackcascade.synthetic.masks import MASK_FORMATS, write_crack_masks
from crackcascade.synthetic.rendering import render_scene, sample_for_task
from crackcascade.synthetic.scene import FORMATS, MATERIALS, TASK_SCALES, CrackInfo, Scene
from crackcascade.synthetic.writers import write_phinet

__all__ = [
    "FORMATS",
    "MASK_FORMATS",
    "MATERIALS",
    "SYNTHETIC_MARKER",
    "TASK_SCALES",
    "CrackInfo",
    "Scene",
    "SyntheticCrackMaskDataModule",
    "SyntheticPhiNetDataModule",
    "main",
    "prepare_synthetic",
    "render_scene",
    "sample_for_task",
    "write_concrete_cracks",
    "write_crack_masks",
    "write_phinet",
]
