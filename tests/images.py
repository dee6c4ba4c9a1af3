"""What a PNG image shows, for the tests of the report's charts."""

import io

import matplotlib.image
import numpy as np


def colour_count(png: bytes) -> int:
    """How many distinct RGBA colours the PNG's pixels have: a blank chart has a handful, a drawn one many."""
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    # One 32-bit number per RGBA pixel makes counting colours fast.
    return len(np.unique(np.ascontiguousarray((pixels * 255).round().astype(np.uint8)).view(np.uint32)))
