"""Values for JSON, which has no NaN or infinity: the registry's stored metrics and details, the
console's API."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """`value` as a float, or None when it is not a finite number (NaN, inf, None, a bool, a
    string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats replaced by None, recursively (dict keys as strings,
    tuples as lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
