"""One safetensors file per checkpoint: weights plus JSON metadata in its header. Loading never runs code.

The optimizer state and RNG streams go into a separate ``resume.safetensors`` (only the latest is kept), since
analysis never needs them and they would triple every checkpoint's size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from coopetition.errors import DataError
from coopetition.store.atomic import atomic_write

METADATA_KEY = "coopetition"


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    sequences: int
    path: Path


def checkpoint_name(step: int) -> str:
    return f"step_{step:011d}.safetensors"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """Atomically write ``tensors`` with ``metadata`` (JSON) in the header; return the file's sha256."""
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(payload, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)}))
    return file_sha256(path)


def load_tensors(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by ``save_tensors``; anything else (a pickle, a truncated file) is a DataError."""
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path), device=str(device))
        metadata = json.loads(header.get(METADATA_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"not a valid coopetition checkpoint: {path} ({err})") from None
    return tensors, metadata


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
