"""Stable numeric codes of item ids: what feature tables, cart fields and UDFs compare."""

from __future__ import annotations

import numpy as np
import pandas as pd

CODE_BITS = 52


def item_codes(ids: np.ndarray | pd.Index) -> np.ndarray:
    """A stable 52-bit code per item id (float64, exact): what the UDFs compare."""
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object))
    return np.asarray(hashed >> np.uint64(64 - CODE_BITS), dtype=np.float64)


__all__ = ["CODE_BITS", "item_codes"]
