"""Typed model inputs: what a model declares it takes (:class:`TensorSpec`, :class:`Signature`),
one traffic row's inputs (a :data:`Row`: input name -> array without the batch dimension), rows
batched for a model (:func:`collate`, padding dynamic dimensions to the longest row of the batch)
and the compact binary form rows are stored in (:func:`encode_row` / :func:`decode_row`).

A single-input float model (the tabular case) is the signature with one spec; everything else
(transformers with ``input_ids`` + ``attention_mask`` of variable length, NCHW image tensors) is
the same code with more specs. Nothing here unpickles: the binary form is a fixed header plus
raw little-endian array bytes.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

#: dtypes a model input may declare, by numpy name
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
#: ONNX Runtime's type strings (``NodeArg.type``) -> numpy dtype names
ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}

Row = dict[str, np.ndarray]          # one sample's inputs, no batch dimension
Batch = dict[str, np.ndarray]        # a batch's inputs, batch dimension first


@dataclass(frozen=True)
class TensorSpec:
    """One model input. ``shape`` is the per-row shape (the batch dimension left out); ``None``
    marks a dynamic dimension (e.g. sequence length). ``pad`` fills dynamic dimensions when rows
    of different lengths share a batch."""
    name: str
    dtype: str = "float32"
    shape: tuple[int | None, ...] = ()
    pad: float = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"input {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @property
    def static(self) -> bool:
        return all(d is not None for d in self.shape)

    @property
    def is_integer(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.integer) or self.dtype == "bool"

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype}[{dims}]"

    def misfit(self, shape: tuple[int, ...]) -> str | None:
        """Why an array of per-row ``shape`` does not fit this input (None: it fits)."""
        if len(shape) != len(self.shape):
            return (f"input {self.name!r} has {len(shape)} dimension(s) {list(shape)}, the model expects "
                    f"{len(self.shape)} {['?' if d is None else d for d in self.shape]}")
        for i, (got, want) in enumerate(zip(shape, self.shape)):
            if want is not None and got != want:
                return f"input {self.name!r} dimension {i} is {got}, the model expects {want}"
            if want is None and got < 1:
                return f"input {self.name!r} dimension {i} is empty"
        return None


@dataclass(frozen=True)
class Signature:
    """The inputs a model takes, in the model's order."""
    inputs: tuple[TensorSpec, ...] = field(default_factory=tuple)

    @classmethod
    def single(cls, shape: Sequence[int], name: str = "input", dtype: str = "float32") -> "Signature":
        return cls((TensorSpec(name, dtype, tuple(int(d) for d in shape)),))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    def spec(self, name: str) -> TensorSpec:
        for s in self.inputs:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def is_single(self) -> bool:
        """One input of fixed shape: rows stack into one array (the tabular and simple image case)."""
        return len(self.inputs) == 1 and self.inputs[0].static

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The per-row shape of a single fixed-shape input (None otherwise)."""
        return tuple(int(d) for d in self.inputs[0].shape) if self.is_single else None  # type: ignore[arg-type]

    def with_pads(self, pads: Mapping[str, float]) -> "Signature":
        return Signature(tuple(replace(s, pad=pads[s.name]) if s.name in pads else s for s in self.inputs))

    def differences(self, other: "Signature") -> list[str]:
        """What differs between two models' inputs (names, dtypes, fixed dimensions), in words;
        empty when a baseline and a candidate can take the same rows."""
        out: list[str] = []
        mine, theirs = {s.name: s for s in self.inputs}, {s.name: s for s in other.inputs}
        for name in mine.keys() - theirs.keys():
            out.append(f"input {name!r} is taken by the first model only")
        for name in theirs.keys() - mine.keys():
            out.append(f"input {name!r} is taken by the second model only")
        for name in mine.keys() & theirs.keys():
            a, b = mine[name], theirs[name]
            if a.dtype != b.dtype:
                out.append(f"input {name!r} is {a.dtype} in the first model, {b.dtype} in the second")
            if len(a.shape) != len(b.shape) or any(x is not None and y is not None and x != y
                                                   for x, y in zip(a.shape, b.shape)):
                out.append(f"input {name!r} has shape {a.describe()} in the first model, {b.describe()} in the second")
        return sorted(out)

    def describe(self) -> str:
        return ", ".join(s.describe() for s in self.inputs)


def cast(value: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``value`` as ``spec``'s dtype; integers must be whole and in range (an int64 id of 3.5 or
    1e30 is a bad input, not something to round)."""
    dtype = np.dtype(spec.dtype)
    arr = np.asarray(value)
    if arr.dtype == dtype:
        return arr
    if dtype == np.bool_:
        if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"input {spec.name!r} is bool: values must be 0/1 or true/false")
        return arr.astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        if arr.dtype.kind == "f" and arr.size and not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"input {spec.name!r} is {spec.dtype}: values must be whole numbers")
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"input {spec.name!r} is {spec.dtype}: values must lie in {info.min}..{info.max}")
        return arr.astype(dtype)
    if np.issubdtype(dtype, np.floating) and arr.size:
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(dtype)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"input {spec.name!r} has values beyond the range of {spec.dtype}")
        return out
    return arr.astype(dtype)


def collate(rows: Sequence[Mapping[str, np.ndarray]], signature: Signature) -> Batch:
    """Rows as one batch per input: each input cast to its dtype, and dynamic dimensions padded
    (with the input's ``pad``) to the longest row of these rows."""
    if isinstance(rows, Rows) and (got := rows.batch(signature)) is not None:
        return got
    out: Batch = {}
    for spec in signature.inputs:
        dtype = np.dtype(spec.dtype)
        if spec.static:
            shape = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
            if not rows:
                out[spec.name] = np.zeros((0, *shape), dtype=dtype)
                continue
            out[spec.name] = np.ascontiguousarray(np.stack([np.asarray(r[spec.name]) for r in rows]).astype(dtype, copy=False))
            continue
        arrays = [np.asarray(r[spec.name]) for r in rows]
        if not arrays:
            out[spec.name] = np.zeros((0, *[d or 0 for d in spec.shape]), dtype=dtype)
            continue
        longest = tuple(max(a.shape[i] for a in arrays) for i in range(len(spec.shape)))
        batch = np.full((len(arrays), *longest), spec.pad, dtype=dtype)
        for i, a in enumerate(arrays):
            batch[(i, *(slice(0, d) for d in a.shape))] = a
        out[spec.name] = batch
    return out


def rows_of(x: np.ndarray, name: str = "input") -> list[Row]:
    """A stacked single-input array ``(n, ...)`` as rows."""
    return [{name: r} for r in np.asarray(x)]


def stack_single(rows: Sequence[Mapping[str, np.ndarray]], signature: Signature) -> np.ndarray:
    """Rows of a single fixed-shape input as one ``(n, *shape)`` array of its dtype."""
    spec = signature.inputs[0]
    return collate(rows, signature)[spec.name]


def row_length(row: Mapping[str, np.ndarray], signature: Signature) -> int:
    """A row's length along its first dynamic dimension (0 when every input is fixed): what
    rows are bucketed by."""
    for spec in signature.inputs:
        for i, d in enumerate(spec.shape):
            if d is None:
                return int(np.asarray(row[spec.name]).shape[i])
    return 0


# -- binary storage -----------------------------------------------------------------------------
# "ST1" | u8 count | per array: u8 name length, name (UTF-8), u8 dtype code, u8 ndim, u32 dims...,
# raw little-endian bytes. About 8 + 4·ndim bytes of overhead per array.

_MAGIC = b"ST1"
_CODES = {name: i for i, name in enumerate(DTYPES)}


def encode_row(row: Mapping[str, np.ndarray]) -> bytes:
    """One row's arrays, typed, in the compact binary form the store keeps."""
    parts = [_MAGIC, _COUNT[len(row)] if len(row) < 256 else struct.pack("<B", len(row))]
    for name, value in row.items():
        arr = value if type(value) is np.ndarray else np.asarray(value)
        dtype = arr.dtype
        head = _HEADS.get((name, dtype, arr.shape))
        if head is None:
            head = _head(name, arr)
        parts.append(head)
        if dtype.byteorder in _NOT_LITTLE or not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<"))
        parts.append(arr.tobytes())
    return b"".join(parts)


def encode_rows(name: str, rows: np.ndarray) -> list[bytes]:
    """``encode_row({name: rows[i]})`` of each row of ``rows`` (one input's batch, the first axis
    the rows), the same bytes, made from one copy of the batch: the header once, then each row's
    slice of the little-endian buffer."""
    if rows.ndim == 0:
        raise ValueError(f"input {name[:40]!r}: a batch of rows needs a first axis")
    if len(rows) == 0:
        return []
    arr = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))
    prefix = _MAGIC + _COUNT[1] + (_HEADS.get((name, rows.dtype, rows.shape[1:])) or _head(name, rows[0]))
    data, k = arr.tobytes(), arr[0].nbytes
    return [prefix + data[j:j + k] for j in range(0, len(data), k)] if k else [prefix] * len(rows)


_COUNT = [struct.pack("<B", i) for i in range(256)]
_NOT_LITTLE = frozenset(">=" if sys.byteorder == "big" else ">")   # byte orders stored swapped ("|": one byte)
_HEADS: dict[tuple[str, np.dtype, tuple[int, ...]], bytes] = {}   # (name, dtype, shape) -> its header
_HEADS_MAX = 4096   # rows of one model share a few layouts; ragged text lengths a few hundred


def _head(name: str, arr: np.ndarray) -> bytes:
    """An array's header in a stored row (name, dtype code, rank, dims), kept for the next row of
    the same layout: building it was most of a row's encoding."""
    code = _CODES.get(arr.dtype.name)
    if code is None:
        raise ValueError(f"input {name!r}: dtype {arr.dtype} cannot be stored")
    key = name.encode("utf-8")
    if len(key) > 255 or arr.ndim > 255:
        raise ValueError(f"input {name[:40]!r}: name or rank too long to store")
    head = struct.pack("<B", len(key)) + key + struct.pack("<BB", code, arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
    if len(_HEADS) < _HEADS_MAX:
        _HEADS[(name, arr.dtype, arr.shape)] = head
    return head


def decode_row(data: bytes | bytearray | memoryview) -> Row:
    """The row :func:`encode_row` wrote. Raises ValueError on anything else."""
    buf = memoryview(bytes(data))
    if bytes(buf[:3]) != _MAGIC:
        raise ValueError("not a stored row (bad magic)")
    (count,), pos = struct.unpack_from("<B", buf, 3), 4
    out: Row = {}
    for _ in range(count):
        (klen,) = struct.unpack_from("<B", buf, pos)
        name = bytes(buf[pos + 1:pos + 1 + klen]).decode("utf-8")
        pos += 1 + klen
        code, ndim = struct.unpack_from("<BB", buf, pos)
        pos += 2
        shape = struct.unpack_from(f"<{ndim}I", buf, pos)
        pos += 4 * ndim
        dtype = np.dtype(DTYPES[code]).newbyteorder("<")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if pos + size > len(buf):
            raise ValueError("stored row is truncated")
        out[name] = np.frombuffer(buf[pos:pos + size], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        pos += size
    if pos != len(buf):
        raise ValueError("stored row has trailing bytes")
    return out


def _layout(data: bytes) -> tuple[list[tuple[str, np.dtype, tuple[int, ...], int, int]], np.ndarray]:
    """Where each array of a stored row lies: (name, dtype, shape, offset, size) per array, and a
    mask of the row's header bytes (everything that is not array data). Validates like decode_row."""
    decode_row(data)    # raises for anything that is not a stored row
    buf = memoryview(data)
    (count,), pos = struct.unpack_from("<B", buf, 3), 4
    arrays, header = [], np.ones(len(data), dtype=bool)
    for _ in range(count):
        (klen,) = struct.unpack_from("<B", buf, pos)
        name = bytes(buf[pos + 1:pos + 1 + klen]).decode("utf-8")
        code, ndim = struct.unpack_from("<BB", buf, pos + 1 + klen)
        pos += 3 + klen
        shape = struct.unpack_from(f"<{ndim}I", buf, pos)
        pos += 4 * ndim
        dtype = np.dtype(DTYPES[code]).newbyteorder("<")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arrays.append((name, dtype, tuple(shape), pos, size))
        header[pos:pos + size] = False
        pos += size
    return arrays, header


def decode_rows(blobs: Sequence[bytes]) -> list[Row]:
    """Many stored rows, as :func:`decode_row` gives them one by one (same names, dtypes, shapes
    and values), decoded in bulk (:class:`Rows`): each row's array is a view of one
    ``(rows, *shape)`` array per layout. Raises ValueError, like decode_row, for anything that is
    not a stored row."""
    rows = Rows()
    rows.extend(blobs)
    return list(rows)


class Rows(Sequence[Row]):
    """Stored rows held by column: rows of one layout (the usual window of a fixed-shape model)
    are decoded through one numpy call per input into one ``(rows, *shape)`` array each (a
    *group*); rows of other layouts (fewer than 8 of a byte length, or a differing header) are
    decoded one by one (*loose*). ``rows[i]`` is the row :func:`decode_row` gives (each array a
    view of its group's column); :func:`collate` stacks fixed-shape inputs straight from the
    columns, without a dict per row. Far less memory and time than a dict and an array per row."""

    def __init__(self) -> None:
        self.groups: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []   # (row indexes, columns)
        self.loose: dict[int, Row] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []   # per extend: (group, position) of each row
        self._where: tuple[np.ndarray, np.ndarray] | None = None
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("row index out of range")
        if self._where is None:
            self._where = (np.concatenate([g for g, _ in self._parts]), np.concatenate([p for _, p in self._parts]))
        g = int(self._where[0][i])
        if g < 0:
            return self.loose[i]
        k = int(self._where[1][i])
        return {name: col[k] for name, col in self.groups[g][1].items()}

    def extend(self, blobs: Sequence[bytes]) -> None:
        """Decode stored rows (raises ValueError, like decode_row) and add them at the end."""
        base, n = self._n, len(blobs)
        group, pos = np.full(n, -1, dtype=np.int32), np.zeros(n, dtype=np.int64)
        by_length: dict[int, list[int]] = {}
        for i, b in enumerate(blobs):
            by_length.setdefault(len(b), []).append(i)
        loose: list[int] = []
        for length, idx in by_length.items():
            if len(idx) < 8:
                loose += idx
                continue
            arrays, header = _layout(bytes(blobs[idx[0]]))
            mat = np.frombuffer(b"".join(bytes(blobs[i]) for i in idx), dtype=np.uint8).reshape(len(idx), length)
            same = (mat[:, header] == mat[0, header]).all(axis=1)
            members = np.asarray(idx, dtype=np.int64)[same]
            columns = {name: np.ascontiguousarray(mat[same, off:off + size]).view(dtype).reshape(-1, *shape)
                       .astype(dtype.newbyteorder("="), copy=False) for name, dtype, shape, off, size in arrays}
            group[members], pos[members] = len(self.groups), np.arange(len(members))
            self.groups.append((members + base, columns))
            loose += [i for i, ok in zip(idx, same) if not ok]
        for i in sorted(loose):
            self.loose[base + i] = decode_row(blobs[i])
        self._parts.append((group, pos))
        self._n, self._where = base + n, None

    def join(self, other: "Rows") -> None:
        """Add ``other``'s rows at the end (its columns are shared, not copied)."""
        base = self._n
        first = len(self.groups)
        self.groups += [(members + base, columns) for members, columns in other.groups]
        self.loose.update({base + i: r for i, r in other.loose.items()})
        self._parts += [(np.where(g < 0, g, g + first).astype(np.int32), p) for g, p in other._parts]
        self._n, self._where = base + other._n, None

    def adopted(self, signature: Signature) -> "Rows | list[Row]":
        """These rows as ``signature``'s inputs (:func:`adopt` of each): the same columns when every
        group holds exactly the inputs ``signature`` names, else a list of adopted rows."""
        if not all(_conforms(columns, signature) for _, columns in self.groups):
            return [adopt(r, signature) for r in self]
        out = Rows()
        out.groups, out._parts, out._n = self.groups, self._parts, self._n
        out.loose = {i: adopt(r, signature) for i, r in self.loose.items()}
        return out

    def batch(self, signature: Signature) -> Batch | None:
        """The rows as :func:`collate` batches them, straight from the columns; None when an input
        is dynamic or a row does not hold it in its shape and dtype (collate does it row by row)."""
        out: Batch = {}
        for spec in signature.inputs:
            if not spec.static:
                return None
            shape, dtype = tuple(int(d) for d in spec.shape), np.dtype(spec.dtype)  # type: ignore[arg-type]
            col = np.empty((self._n, *shape), dtype=dtype)
            for members, columns in self.groups:
                got = columns.get(spec.name)
                if got is None or got.shape[1:] != shape or got.dtype != dtype:
                    return None
                col[members] = got
            for i, row in self.loose.items():
                got = np.asarray(row.get(spec.name)) if spec.name in row else None
                if got is None or got.shape != shape or got.dtype != dtype:
                    return None
                col[i] = got
            out[spec.name] = col
        return out


def _conforms(columns: Mapping[str, np.ndarray], signature: Signature) -> bool:
    """Whether rows of these columns are already ``signature``'s inputs (adopt returns them as they are)."""
    if list(columns) != list(signature.names):
        return False
    if not signature.is_single:   # adopt keeps such a row's arrays as they are
        return True
    spec, col = signature.inputs[0], columns[signature.inputs[0].name]
    return col.ndim > 1 and col.dtype == np.dtype(spec.dtype) and col.shape[1:] == spec.shape


def row_to_json(row: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A row as plain JSON (named tensors as nested lists), e.g. for a report or a replay file."""
    return {k: np.asarray(v).tolist() for k, v in row.items()}


def as_row(inputs: Mapping[str, np.ndarray] | Sequence[float]) -> Row:
    """A row as it is; a plain list of numbers (what samples held before typed inputs) in the
    legacy form: one float32 1-D array named ``input``."""
    if isinstance(inputs, Mapping):
        return dict(inputs)
    return {"input": np.asarray(inputs, dtype=np.float32).reshape(-1)}


def adopt(row: Mapping[str, np.ndarray] | Sequence[float], signature: Signature) -> Row:
    """A stored row as ``signature``'s inputs. Rows stored before typed inputs (and rows of a
    legacy single-input message) hold one flat float32 array named ``input``: for a model with
    one fixed-shape input it becomes that input, under the model's name, reshaped to its shape
    and cast to its dtype. A row whose names already match is returned as it is. Raises
    ValueError saying what the row holds and what the model takes otherwise."""
    if signature.is_single and isinstance(row, dict) and len(row) == 1:   # the common case, checked cheaply
        spec = signature.inputs[0]
        arr = row.get(spec.name)
        if isinstance(arr, np.ndarray) and arr.dtype == spec.dtype and arr.shape == spec.shape:
            return row
    row = as_row(row)
    if not signature.is_single:
        if all(n in row for n in signature.names):
            return {n: row[n] for n in signature.names}
    else:
        spec = signature.inputs[0]
        arr = row.get(spec.name) if spec.name in row else (next(iter(row.values())) if len(row) == 1 else None)
        shape = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
        if arr is not None and np.asarray(arr).size == int(np.prod(shape, dtype=np.int64)):
            return {spec.name: cast(np.asarray(arr).reshape(shape), spec)}
    held = ", ".join(f"{k} {np.asarray(v).dtype}{list(np.asarray(v).shape)}" for k, v in row.items())
    raise ValueError(f"stored row holds {held or 'nothing'}; the model takes {signature.describe()}")
