"""One safetensors file per checkpoint: weights plus JSON metadata in its header. Loading never runs code.

Files are read whole, checked against the size and sha256 the manifest recorded for them (when given), and only
then parsed by safetensors, so a truncated, altered or planted file (a pickle named ``.safetensors``) is a one-line
``DataError`` naming its path, and the bytes checked are the bytes used. No pickle, no ``torch.load``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

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


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """Atomically write ``tensors`` with ``metadata`` (JSON) in the header; return the file's sha256."""
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(payload, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)}))
    return file_sha256(path)


def mismatch(data: bytes, expected_bytes: int | None, expected_sha256: str | None) -> str | None:
    """Why ``data`` is not the recorded file (size first: a truncated file says so), or None if it is."""
    if expected_bytes is not None and len(data) != expected_bytes:
        return f"{len(data)} bytes, the manifest recorded {expected_bytes} (truncated or replaced)"
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        return "sha256 differs from the manifest (altered or corrupted)"
    return None


def verify_file(path: Path, expected_bytes: int | None, expected_sha256: str | None) -> str | None:
    """None if ``path`` exists with the recorded size and hash, else the reason it does not."""
    if not path.is_file():
        return "missing"
    if expected_bytes is not None and path.stat().st_size != expected_bytes:
        return f"{path.stat().st_size} bytes, the manifest recorded {expected_bytes} (truncated or replaced)"
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        return "sha256 differs from the manifest (altered or corrupted)"
    return None


def load_tensors(path: Path, device: str | torch.device = "cpu", expected_bytes: int | None = None,
                 expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by ``save_tensors``; a missing, corrupt or foreign file (a pickle) is a DataError."""
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read checkpoint {path}: {err.strerror}") from None
    reason = mismatch(data, expected_bytes, expected_sha256)
    if reason:
        raise DataError(f"corrupt checkpoint {path}: {reason}")
    try:
        metadata = json.loads(_header(data).get("__metadata__", {}).get(METADATA_KEY, "{}"))
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError, AttributeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"not a valid coopetition checkpoint (safetensors): {path} ({detail})") from None
    if not isinstance(metadata, dict):
        raise DataError(f"not a valid coopetition checkpoint: {path} (metadata is not a JSON object)")
    return {k: v.to(device) for k, v in tensors.items()}, metadata


def _header(data: bytes) -> dict[str, Any]:
    """The safetensors JSON header (8-byte little-endian length, then JSON); anything else is a ValueError."""
    if len(data) < 8:
        raise ValueError("file shorter than a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise ValueError("header length points past the end of the file")
    header = json.loads(data[8:8 + size])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
