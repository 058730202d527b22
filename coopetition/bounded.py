"""Bounded reads of files that may be hostile: every size is checked before the bytes it announces are allocated.

A run directory, an exemplar bank or an eval-set file can come from anyone, so a reader must fail fast, with a
one-line ``DataError`` naming the file, on a forged length or count rather than run out of memory, hang or
traceback. The rules here:

- ``read_bytes`` opens only regular files (never a FIFO, device or socket: no hang; ``O_NONBLOCK`` even on the open)
  and refuses one above its cap, read by ``fstat`` before a byte is read.
- ``parse_json`` refuses more than ``depth`` levels of nesting and the non-standard constants ``NaN``/``Infinity``.
- ``read_safetensors`` reads the 8-byte length and the JSON header first, checks the header (length, tensor count,
  dtypes, shapes, byte offsets, and the ``TensorLayout`` the caller expects) and only then reads the tensor data, so
  a forged header never makes us allocate what it claims.

Readers that know where a file must live (a run's checkpoints) resolve its path first (``store.contain``); this
module only bounds what is read once a path is allowed. It is a leaf: the bank, the task and the store all use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coopetition.errors import DataError

MAX_JSON_BYTES = 1 << 20  # config.json, sweep outcome files: a few KB in practice
MAX_JSON_DEPTH = 16  # config.json nests 5 deep (config.task.mixture.0.field)
MAX_HEADER_BYTES = 16 << 20  # a safetensors JSON header; ours are a few KB (a 256-layer resume state ~ 1 MB)
MAX_TENSORS = 16384
MAX_TENSOR_RANK = 8
MAX_TENSOR_FILE = 1 << 34  # 16 GiB: the biggest legitimate bank (MAX_SYNTHETIC floats)
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_bytes(path: Path, what: str, max_bytes: int, expected_bytes: int | None = None) -> bytes:
    """The whole file, if it is a regular file of at most ``max_bytes`` (and exactly ``expected_bytes`` when
    given: a manifest's record); ``what`` names it in errors ("checkpoint", "eval.csv")."""
    with open_regular(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        check_size(path, what, size, max_bytes, expected_bytes)
        data = handle.read(size + 1)
    if len(data) != size:
        raise DataError(f"{what} {path} changed size while it was read")
    return data


def check_size(path: Path, what: str, size: int, max_bytes: int, expected_bytes: int | None) -> None:
    if expected_bytes is not None and size != expected_bytes:
        raise DataError(f"corrupt {what} {path}: {size} bytes, the manifest recorded {expected_bytes} "
                        f"(truncated or replaced)")
    if size > max_bytes:
        raise DataError(f"{what} {path} is {size} bytes, more than the {max_bytes} allowed")


def open_regular(path: Path, what: str):
    """A binary read handle on ``path`` if it is a regular file; a FIFO, device, socket or directory (or a symlink
    in the last component: callers pass resolved paths) is a DataError, and opening never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as err:  # ELOOP (a symlink), EACCES, a NUL in the name ...
        raise DataError(f"cannot open {what} {path}: {getattr(err, 'strerror', None) or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{what} {path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def parse_json(data: bytes | str, what: str, depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON (no NaN/Infinity) nested at most ``depth`` deep; anything else is a one-line DataError."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    try:
        value = json.loads(data, parse_constant=no_constants)
    except RecursionError:  # nested deeper than the interpreter will recurse: refuse, never crash
        raise DataError(f"{what} is nested more than {depth} levels deep") from None
    except (ValueError, UnicodeDecodeError, TypeError) as err:  # JSONDecodeError, a 5000-digit int ...
        raise DataError(f"cannot parse {what}: {_first_line(err)}") from None
    if _depth(value) > depth:
        raise DataError(f"{what} is nested more than {depth} levels deep")
    return value


def read_json(path: Path, what: str, max_bytes: int = MAX_JSON_BYTES, depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object from a file, bounded in size and depth."""
    value = parse_json(read_bytes(path, what, max_bytes), f"{what} {path}", depth)
    if not isinstance(value, dict):
        raise DataError(f"{what} {path} is not a JSON object")
    return value


def _depth(value: Any) -> int:
    """Nesting depth without recursion (a scalar is 0, ``[]`` is 1)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


@dataclass(frozen=True)
class TensorLayout:
    """What a safetensors file may hold, checked on its header before its data is read.

    ``tensors`` maps each allowed name to ``(dtype, shape)`` (shape None: any shape within the caps); None allows any
    name with a dtype from ``dtypes``. ``required`` names must be present. ``max_bytes`` bounds the file.
    """

    tensors: Mapping[str, tuple[str, tuple[int, ...] | None]] | None = None
    required: frozenset[str] = frozenset()
    dtypes: frozenset[str] = frozenset(DTYPE_BYTES)
    max_tensors: int = MAX_TENSORS
    max_bytes: int = MAX_TENSOR_FILE
    exact: bool = field(default=False)  # every name in ``tensors`` is required (a model's state dict)

    def problem(self, name: str, dtype: str, shape: list[int]) -> str | None:
        if self.tensors is None:
            return None if dtype in self.dtypes else f"tensor {name!r} has dtype {dtype}"
        if name not in self.tensors:
            return f"unexpected tensor {_short(name)}"
        want_dtype, want_shape = self.tensors[name]
        if dtype != want_dtype:
            return f"tensor {name!r} is {dtype}, expected {want_dtype}"
        if want_shape is not None and tuple(shape) != tuple(want_shape):
            return f"tensor {name!r} has shape {list(shape)}, expected {list(want_shape)}"
        return None

    def missing(self, names: set[str]) -> list[str]:
        needed = set(self.required) | (set(self.tensors or ()) if self.exact else set())
        return sorted(needed - names)


def read_safetensors(path: Path, what: str, layout: TensorLayout = TensorLayout(),
                     expected_bytes: int | None = None, expected_sha256: str | None = None,
                     ) -> tuple[bytes, dict[str, Any]]:
    """``(the file's bytes, its checked header)``: size and header are checked before the tensor data is read, the
    sha256 (when given) over every byte. Hand the bytes to ``safetensors.*.load``: they are the bytes checked."""
    with open_regular(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        check_size(path, what, size, layout.max_bytes, expected_bytes)
        head = handle.read(8)
        header_bytes = handle.read(_header_length(path, what, head, size))
        header = check_header(path, what, header_bytes, size, layout)
        rest = handle.read(size - len(head) - len(header_bytes) + 1)
    data = head + header_bytes + rest
    if len(data) != size:
        raise DataError(f"{what} {path} changed size while it was read")
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise DataError(f"corrupt {what} {path}: sha256 differs from the manifest (altered or corrupted)")
    return data, header


def _header_length(path: Path, what: str, head: bytes, size: int) -> int:
    if len(head) < 8:
        raise DataError(f"not a valid {what} (safetensors): {path} (file shorter than a safetensors header)")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES:
        raise DataError(f"not a valid {what} (safetensors): {path} (header of {length} bytes, more than the "
                        f"{MAX_HEADER_BYTES} allowed)")
    if length > size - 8:
        raise DataError(f"not a valid {what} (safetensors): {path} (header length points past the end of the file)")
    return length


def check_header(path: Path, what: str, header_bytes: bytes, size: int, layout: TensorLayout) -> dict[str, Any]:
    """The parsed header if every entry is well formed, fits ``layout`` and the data exactly fills the file."""

    def bad(reason: str) -> DataError:
        return DataError(f"not a valid {what} (safetensors): {path} ({reason})")

    try:
        header = parse_json(header_bytes, "header", depth=4)
    except DataError as err:
        raise bad(str(err)) from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ is not a map of strings")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > layout.max_tensors:
        raise bad(f"{len(entries)} tensors, more than the {layout.max_tensors} allowed")
    spans = []
    for name, entry in entries.items():
        if not (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}):
            raise bad(f"tensor {_short(name)} is not {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BYTES or dtype not in layout.dtypes:
            raise bad(f"tensor {_short(name)} has dtype {_short(dtype)}")
        if not (isinstance(shape, list) and len(shape) <= MAX_TENSOR_RANK
                and all(type(d) is int and d >= 0 for d in shape)):
            raise bad(f"tensor {_short(name)} has shape {_short(shape)}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise bad(f"tensor {_short(name)} has data_offsets {_short(offsets)}")
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * DTYPE_BYTES[dtype] or offsets[0] < 0:
            raise bad(f"tensor {_short(name)}: data_offsets {offsets} do not fit shape {shape} of {dtype}")
        problem = layout.problem(name, dtype, shape)
        if problem:
            raise bad(problem)
        spans.append(tuple(offsets))
    missing = layout.missing(set(entries))
    if missing:
        raise bad(f"lacks tensor(s) {', '.join(map(repr, missing[:3]))}{' ...' if len(missing) > 3 else ''}")
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise bad("tensor data overlaps or leaves gaps")
        end = stop
    if 8 + len(header_bytes) + end != size:
        raise bad(f"tensor data ends at byte {8 + len(header_bytes) + end}, the file has {size}")
    return header


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
