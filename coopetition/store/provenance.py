"""What a run or an analysis records about the process that wrote it: package versions and a UTC timestamp."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata

PACKAGES = ("coopetition", "torch", "transformer-lens", "numpy", "safetensors", "pandas", "plotly", "einops")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
