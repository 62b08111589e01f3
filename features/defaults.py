"""Typed defaults live next to each feature: `feature("price", Float32, default=0.0)`.

The default is stored in the Field's tags (or, for on-demand views, whose output fields must
match Feast's inferred schema exactly, in the view's tags as `default:<feature>`), so it travels
through the Feast registry into the feature contract that the trainer and the gateway share.
"""

from __future__ import annotations

from feast import Field
from feast.types import FeastType

DEFAULT_TAG = "default"


def feature(name: str, dtype: FeastType, default: float, description: str = "") -> Field:
    """A Feast Field whose missing value is `default` in training and in serving."""
    return Field(
        name=name, dtype=dtype, description=description, tags={DEFAULT_TAG: repr(float(default))}
    )


def view_defaults(**defaults: float) -> dict[str, str]:
    """View-level tags declaring the defaults of an on-demand view's output features."""
    return {f"{DEFAULT_TAG}:{name}": repr(float(value)) for name, value in defaults.items()}
