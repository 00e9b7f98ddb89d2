"""Types shared by the readers, datasets and data modules."""

from __future__ import annotations

from typing import Any, Literal

OnError = Literal["raise", "skip"]
"""What a reader or loader does with a bad file or entry: ``raise`` one line naming it, or ``skip`` and count it."""

Sample = dict[str, Any]
"""One dataset item: ``{"image": uint8 (3, H, W), ...}`` plus labels, mask, path or scale."""
