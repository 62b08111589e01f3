"""Read the data frames of an R data file (.rda/.RData): enough of R's serialization for a table.

R packages ship data sets in this format (e.g. the UCI Online Retail log in the `onlineretail`
package). It is R's XDR serialization (R Internals, "Serialization Formats"), compressed with
xz, gzip or bzip2. Columns of character, integer, logical, double, factor and date-time (POSIXct,
Date) types are read into pandas; anything else is refused with the R type named.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# SEXP types (R Internals, "SEXPTYPEs") and the serializer's pseudo-types.
_SYMSXP, _LISTSXP, _CHARSXP = 1, 2, 9
_LGLSXP, _INTSXP, _REALSXP, _STRSXP, _VECSXP = 10, 13, 14, 16, 19
_ALTREP, _REF, _NILVALUE = 238, 255, 254
_SPECIAL_ENVS = {241, 242, 247, 251, 252, 253}  # base/empty/global env, missing, unbound
_NA_INT = -(2**31)
_UTF8, _LATIN1 = 1 << 3, 1 << 2


class RDataError(ValueError):
    """The file is not an R data file this reader understands; the message says why."""


@dataclass
class _RObject:
    """An R value: its payload and its attributes (names, class, levels, tzone...)."""

    value: Any
    attrs: dict[str, Any] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []

    def _take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        if len(out) < n:
            raise RDataError("the file ends in the middle of a value")
        self.pos += n
        return out

    def read_int(self) -> int:
        return int(struct.unpack(">i", self._take(4))[0])

    def length(self) -> int:
        n = self.read_int()
        if n == -1:  # long vector: two more ints
            return (self.read_int() << 32) + self.read_int()
        return n

    def item(self) -> Any:
        flags = self.read_int()
        kind, levels = flags & 0xFF, flags >> 12
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == _NILVALUE or kind in _SPECIAL_ENVS:
            return None
        if kind == _REF:
            index = flags >> 8 or self.read_int()
            return self.refs[index - 1]
        if kind == _SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == _LISTSXP:
            return self._pairlist(has_attr, has_tag)
        if kind == _CHARSXP:
            n = self.read_int()
            if n == -1:
                return None
            raw = self._take(n)
            return raw.decode("latin-1" if levels & _LATIN1 and not levels & _UTF8 else "utf-8")
        if kind == _ALTREP:
            return self._altrep()
        if kind in (_LGLSXP, _INTSXP):
            n = self.length()
            value: Any = np.frombuffer(self._take(4 * n), dtype=">i4").astype(np.int64)
        elif kind == _REALSXP:
            n = self.length()
            value = np.frombuffer(self._take(8 * n), dtype=">f8").astype(np.float64)
        elif kind == _STRSXP:
            value = [self.item() for _ in range(self.length())]
        elif kind == _VECSXP:
            value = [self.item() for _ in range(self.length())]
        else:
            raise RDataError(f"R type {kind} is not supported (only data frames of vectors)")
        obj = _RObject(value)
        if kind == _LGLSXP:
            obj.attrs["__logical__"] = True
        if has_attr:
            obj.attrs.update(self.item() or {})
        return obj

    def _pairlist(self, has_attr: bool, has_tag: bool) -> dict[str, Any]:
        """A pairlist (attributes, or the file's top level) as an ordered name -> value dict."""
        out: dict[str, Any] = {}
        while True:
            if has_attr:
                self.item()
            tag = self.item() if has_tag else f"V{len(out) + 1}"
            out[str(tag)] = self.item()
            flags = self.read_int()
            kind = flags & 0xFF
            if kind == _NILVALUE:
                return out
            if kind != _LISTSXP:
                raise RDataError(f"a pairlist ends in R type {kind}")
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def _altrep(self) -> _RObject:
        """Compact sequences and wrappers R 3.5+ writes in place of plain vectors."""
        info, state, attrs = self.item(), self.item(), self.item()
        cls = next(iter(info.values())) if isinstance(info, dict) else None
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, step = (float(v) for v in state.value[:3])
            value: Any = start + step * np.arange(int(n))
        elif cls and str(cls).startswith("wrap_"):
            value = state.value[0].value
        else:
            raise RDataError(f"R compact vector class {cls!r} is not supported")
        return _RObject(value, attrs or {})


def _column(name: str, obj: _RObject) -> pd.Series:
    classes = obj.attrs.get("class")
    classes = set(classes.value) if isinstance(classes, _RObject) else set()
    value = obj.value
    if "factor" in classes:
        codes = np.asarray(value)
        levels = np.asarray(obj.attrs["levels"].value, dtype=object)
        out = np.where(codes == _NA_INT, None, levels[np.clip(codes - 1, 0, len(levels) - 1)])
        return pd.Series(out, name=name, dtype=object)
    if isinstance(value, list):
        return pd.Series(value, name=name, dtype=object)
    arr = np.asarray(value)
    if arr.dtype.kind == "i":
        if obj.attrs.get("__logical__"):
            return pd.Series(np.where(arr == _NA_INT, None, arr == 1), name=name, dtype=object)
        return pd.Series(arr, name=name, dtype="Int64").mask(arr == _NA_INT)
    if "POSIXct" in classes:
        tz = obj.attrs.get("tzone")
        tz_name = tz.value[0] if isinstance(tz, _RObject) and tz.value and tz.value[0] else "UTC"
        return pd.Series(pd.to_datetime(arr, unit="s", utc=True), name=name).dt.tz_convert(tz_name)
    if "Date" in classes:
        return pd.Series(pd.to_datetime(arr, unit="D"), name=name)
    return pd.Series(arr, name=name)


def read_rda(path: Path) -> dict[str, pd.DataFrame]:
    """Every data frame saved in an .rda/.RData file, by its R name.

    Raises:
        RDataError: the file is not XDR-serialized R data, or holds a type not supported.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:3] == b"BZh":
        raw = bz2.decompress(raw)
    elif raw[:6] == b"\xfd7zXZ\x00":
        raw = lzma.decompress(raw)
    if raw[:5] not in (b"RDX2\n", b"RDX3\n") or raw[5:7] != b"X\n":
        raise RDataError(f"{path.name}: not an R data file in XDR format (saved by save())")
    reader = _Reader(raw)
    reader.pos = 7
    version = reader.read_int()
    reader.read_int(), reader.read_int()  # writer's and minimal reader's R versions
    if version == 3:
        reader._take(reader.read_int())  # native encoding name
    top = reader.item()
    if not isinstance(top, dict):
        raise RDataError(f"{path.name}: no named objects at the top level")
    frames: dict[str, pd.DataFrame] = {}
    for name, obj in top.items():
        classes = obj.attrs.get("class") if isinstance(obj, _RObject) else None
        if classes is None or "data.frame" not in classes.value:
            continue
        names = obj.attrs["names"].value
        frames[name] = pd.concat(
            [_column(col, item) for col, item in zip(names, obj.value, strict=True)], axis=1
        )
    return frames
