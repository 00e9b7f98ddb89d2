"""Crack-mask data: COCO instance annotations or image/mask pairs, read into lazily rasterised records.

Two dataset formats are read, each from one folder:

* **COCO** (as exported by COCO Annotator): ``folder/annotations.json`` and the images, each
  ``file_name`` relative to ``folder`` or to ``folder/images``. Polygons and RLE (compressed or
  uncompressed counts, ``iscrowd`` 0 or 1) are accepted; all instances of a class in an image
  are unioned; an image without annotations is crack-free (an all-zero mask).
* **Mask pairs**: ``folder/images/*`` and ``folder/masks/*`` paired by file stem (a mask may
  have any lossless image suffix, usually ``.png``; JPEG and lossy WebP masks are refused). With
  one class a grayscale mask holds 0 and 255 (or 1), an RGB mask black and one crack colour, and
  a palette mask the crack at index 1 (Phi-Net's 0/1/2: indices 2-254 are other classes); with
  several classes the mask holds class indices ``1..K`` (palette PNGs are read by palette index,
  grayscale by value). See :mod:`crackcascade.data.maskcheck` for what is refused rather than guessed.

A *scale folder* (``root/<scale>/``, one per scale of :data:`crackcascade.labels.SCALES`) holds
either

1. ONE dataset (COCO or pairs), from which validation (and test, if asked) are carved with a seed;
2. ``train/``, ``val/``, ``test/`` sub-folders (also ``valid``, ``validation``, ``training``,
   ``testing``), each a dataset; a missing validation split is carved from train; or
3. one dataset with id lists next to it, ``train.txt`` / ``val.txt`` / ``test.txt`` (file
   stems, one per line), as in CrackForest. Without ``train.txt`` train is every image not in
   another list; with it, images in no list are left out.

A folder holding both ``annotations.json`` and ``images/`` + ``masks/`` is read as COCO by
``format="auto"``.

Readers validate at read time what is cheap (keys, unique image, annotation and category ids,
paths, symlinks out of the dataset folder, polygons within the image and RLE strings that
decode to the image's size, so that pycocotools never sees input it would hang or crash on, image
and mask sizes and mask formats from file headers) and fail with one line naming
``annotations.json`` or the file and the image or annotation id. With ``on_error="skip"`` the
bad entry is skipped instead, counted in :attr:`RecordList.skipped` and logged as one warning
line per kind. Masks are rasterised only in :meth:`CrackMaskDataset.__getitem__`; problems that
only decoding reveals (a mask value above K, values other than 0/1/255 in a one-class mask, a
crack drawn in the alpha channel, a truncated file) raise there, or with the data module's
``on_error="skip"`` leave the sample out of its batch, counted at the end of the epoch (see
:mod:`crackcascade.data.sampling`).
"""

from crackcascade.data.cracks.coco import read_coco
from crackcascade.data.cracks.dataset import CrackMaskDataset, PhotoDataset, load_mask, pad_collate
from crackcascade.data.cracks.pairs import read_mask_pairs
from crackcascade.data.cracks.records import (
    ANNOTATIONS,
    DEFAULT_CLASSES,
    ID_LISTS,
    IMAGES_DIR,
    MASK_IGNORE,
    MASKS_DIR,
    CocoInstance,
    MaskFormat,
    MaskRecord,
    RecordList,
    class_lookup,
    image_size,
)
from crackcascade.data.cracks.splits import detect_mask_format, read_mask_dataset, read_mask_splits

__all__ = [
    "ANNOTATIONS",
    "DEFAULT_CLASSES",
    "ID_LISTS",
    "IMAGES_DIR",
    "MASKS_DIR",
    "MASK_IGNORE",
    "CocoInstance",
    "CrackMaskDataset",
    "MaskFormat",
    "MaskRecord",
    "PhotoDataset",
    "RecordList",
    "class_lookup",
    "detect_mask_format",
    "image_size",
    "load_mask",
    "pad_collate",
    "read_coco",
    "read_mask_dataset",
    "read_mask_pairs",
    "read_mask_splits",
]
