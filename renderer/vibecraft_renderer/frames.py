"""The contract between visual backends and the encoder."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class FrameSource(Protocol):
    """Draws any frame from its global index alone (so segments can be rendered in any run)."""

    width: int
    height: int

    def render(self, i: int) -> npt.NDArray[np.uint8]:
        """Planar (3, height, width) uint8 frame in G, B, R plane order (ffmpeg pix_fmt gbrp)."""
        ...
