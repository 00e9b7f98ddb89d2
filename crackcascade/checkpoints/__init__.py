"""Every checkpoint and weight file crackcascade reads, read without running code from it.

* :mod:`~crackcascade.checkpoints.reading`: ``weights_only`` loads, ``--trust_checkpoint``, globs,
  Lightning checkpoints and what they hold;
* :mod:`~crackcascade.checkpoints.classes`: the class a checkpoint records, and importing it;
* :mod:`~crackcascade.checkpoints.weights`: backbone and U-Net encoder weights from local files;
* :mod:`~crackcascade.checkpoints.backbone`: backbone files written by pretraining (safetensors + JSON);
* :mod:`~crackcascade.checkpoints.convert`: ``crackcascade convert IN OUT`` for files that need pickle;
* :mod:`~crackcascade.checkpoints.restore`: trained models rebuilt from their checkpoints (the
  cascade, export). Not imported here: it imports the models, which import this package.
"""

from crackcascade.checkpoints.classes import CLASS_KEY, class_path, import_class, saved_class
from crackcascade.checkpoints.convert import convert, main, to_plain
from crackcascade.checkpoints.reading import (
    TRUST_ENV,
    checkpoint_kind,
    load_checkpoint,
    read_lightning_checkpoint,
    refusal,
    resolve_checkpoint,
    trusted,
)
from crackcascade.checkpoints.weights import KNOWN_PREFIXES, load_encoder_weights, load_weights, read_state_dict

__all__ = [
    "CLASS_KEY",
    "KNOWN_PREFIXES",
    "TRUST_ENV",
    "checkpoint_kind",
    "class_path",
    "convert",
    "import_class",
    "load_checkpoint",
    "load_encoder_weights",
    "load_weights",
    "main",
    "read_lightning_checkpoint",
    "read_state_dict",
    "refusal",
    "resolve_checkpoint",
    "saved_class",
    "to_plain",
    "trusted",
]
