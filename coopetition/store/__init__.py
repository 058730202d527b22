"""The run directory on disk: atomic writes, safetensors checkpoints, the manifest, tidy tables."""
