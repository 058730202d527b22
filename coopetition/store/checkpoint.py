"""One safetensors file per checkpoint: weights plus JSON metadata in its header. Loading never runs code.

Files are read whole, checked against the size and sha256 the manifest recorded for them (when given), with the
header checked (``bounded.read_safetensors``: sizes, dtypes, and the expected layout, such as the model's state-dict
shapes) before the data is read, and only then parsed by safetensors. So a truncated, altered, forged or planted file
(a pickle named ``.safetensors``) is a one-line ``DataError`` naming its path, and the bytes checked are the bytes
used. No pickle, no ``torch.load``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from coopetition.bounded import (DTYPE_BYTES, MAX_HEADER_BYTES, TensorLayout, open_regular, parse_json,
                                 read_safetensors)
from coopetition.errors import DataError
from coopetition.store.atomic import atomic_write

METADATA_KEY = "coopetition"


@dataclass(frozen=True)
class CheckpointInfo:
    """A manifest-listed checkpoint; ``bytes``/``sha256`` are what the writer recorded (None: not checked)."""

    step: int
    sequences: int
    path: Path
    bytes: int | None = None
    sha256: str | None = None


def checkpoint_name(step: int) -> str:
    return f"step_{step:011d}.safetensors"


def tensor_file_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> bytes:
    """The exact bytes ``save_tensors`` writes: a zoom hashes a re-trained checkpoint with this to compare it with
    the run's recorded sha256 without writing it."""
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return save(payload, metadata={METADATA_KEY: json.dumps(metadata)})


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """Atomically write ``tensors`` with ``metadata`` (JSON) in the header; return the file's sha256."""
    data = tensor_file_bytes(tensors, metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def verify_file(path: Path, expected_bytes: int | None, expected_sha256: str | None,
                what: str = "checkpoint", max_bytes: int | None = None) -> str | None:
    """None if ``path`` is a regular file with the recorded size and hash, else the reason it is not; one larger
    than ``max_bytes`` is refused before it is hashed."""
    try:
        with open_regular(path, what) as handle:
            size = os.fstat(handle.fileno()).st_size
            if expected_bytes is not None and size != expected_bytes:
                return f"{size} bytes, the manifest recorded {expected_bytes} (truncated or replaced)"
            if max_bytes is not None and size > max_bytes:
                return f"{size} bytes, more than a {what} of this run's model can be ({max_bytes})"
            if expected_sha256 is not None and _sha256(handle) != expected_sha256:
                return "sha256 differs from the manifest (altered or corrupted)"
    except DataError as err:
        return "missing" if "not found" in str(err) else str(err)
    return None


def load_tensors(path: Path, device: str | torch.device = "cpu", expected_bytes: int | None = None,
                 expected_sha256: str | None = None, layout: TensorLayout = TensorLayout(),
                 what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by ``save_tensors``; a missing, corrupt, oversized or foreign file (a pickle), or one
    whose header does not fit ``layout``, is a DataError naming it, raised before its tensor data is allocated."""
    data, header = read_safetensors(path, what, layout, expected_bytes, expected_sha256)
    metadata = parse_json(header.get("__metadata__", {}).get(METADATA_KEY, "{}"), f"{what} {path} metadata", 8)
    if not isinstance(metadata, dict):
        raise DataError(f"not a valid coopetition {what}: {path} (metadata is not a JSON object)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"not a valid {what} (safetensors): {path} ({detail})") from None
    return {k: v.to(device) for k, v in tensors.items()}, metadata


def layout_of(tensors: dict[str, torch.Tensor]) -> TensorLayout:
    """The exact layout of a state dict: these names, dtypes and shapes, nothing else (checked before reading)."""
    spec = {name: (safetensors_dtype(t.dtype), tuple(t.shape)) for name, t in tensors.items()}
    return TensorLayout(spec, exact=True, max_tensors=len(spec), max_bytes=layout_bytes(spec))


def layout_bytes(spec: dict[str, tuple[str, tuple[int, ...] | None]], slack: int = MAX_HEADER_BYTES + 8) -> int:
    """An upper bound on a file holding ``spec``'s tensors (each with a known shape)."""
    total = slack
    for dtype, shape in spec.values():
        numel = 1
        for d in shape or ():
            numel *= d
        total += numel * DTYPE_BYTES[dtype]
    return total


def safetensors_dtype(dtype: torch.dtype) -> str:
    return _DTYPES[dtype]


_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return _sha256(handle)
