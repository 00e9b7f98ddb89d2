"""Phi-Net (PEER Hub ImageNet) data: readers of its three formats and the datasets they feed.

Formats: PHI Challenge arrays ``root/<task>/X_train.npy`` + ``y_train.npy``, image folders
``root/<task>/<split>/<class>/*``, or CSV manifests ``root/train.csv``. :func:`read_index` reads
any of them into an :data:`Index`; :class:`ArrayTaskDataset` and :class:`ImageFileDataset` serve
its entries as samples ``{"image", "labels", "path"}``.
"""

from crackcascade.data.phinet.datasets import ArrayTaskDataset, ImageFileDataset, Transform, label_vector
from crackcascade.data.phinet.entries import MANIFEST_KEY, SPLIT_ALIASES, SPLITS, Entry, Format, Index
from crackcascade.data.phinet.manifest import read_csv_root, read_manifest
from crackcascade.data.phinet.reader import decode_labels, detect_format, read_index

__all__ = [
    "MANIFEST_KEY",
    "SPLITS",
    "SPLIT_ALIASES",
    "ArrayTaskDataset",
    "Entry",
    "Format",
    "ImageFileDataset",
    "Index",
    "Transform",
    "decode_labels",
    "detect_format",
    "label_vector",
    "read_csv_root",
    "read_index",
    "read_manifest",
]
