"""Checkpoint size and I/O time for the ``quick`` and ``c25`` models (run on demand; one figure per line).

    python bench/ckpt_io.py [--shapes quick,c25] [--repeats 7] [--dir DIR]

Times the store's own functions on a real model: ``save_tensors`` (safetensors to a temporary name, fsync, rename,
then the sha256 the manifest records), ``file_sha256`` alone, and ``load_tensors`` with and without checking the
recorded size and sha256. The weights file is what every checkpoint holds; the resume file adds Adam's two moment
tensors per parameter (what training keeps for the last few checkpoints). Medians over ``--repeats``; the files
go to a temporary directory on the same disk as ``--dir`` (default: the system temp dir).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from coopetition.model import build_model
from coopetition.presets import get_preset
from coopetition.store.checkpoint import file_sha256, load_tensors, save_tensors


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def resume_like(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights plus Adam's state after one step, keyed as training keys them."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer.step()
    names = {id(p): n for n, p in model.named_parameters()}
    state = {f"model/{k}": v for k, v in model.state_dict().items()}
    for param, moments in optimizer.state.items():
        for key, value in moments.items():
            state[f"optim/{names[id(param)]}/{key}"] = torch.as_tensor(value).clone()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="quick,c25")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where the temporary files go (its disk is what is timed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"1-min load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for shape in args.shapes.split(","):
            config = get_preset(shape)
            n_classes = config.bank.classes  # the label table and the output layer cover the training classes
            model = build_model(config.model, config.bank.dim, n_classes, n_classes, init_seed=5)
            files = {"weights": dict(model.state_dict()), "resume": resume_like(model)}
            for kind, tensors in files.items():
                path = Path(tmp) / f"{shape}_{kind}.safetensors"
                meta = {"step": 0, "sequences": 0}
                write = median_seconds(lambda: save_tensors(path, tensors, meta), args.repeats)
                size, digest = path.stat().st_size, file_sha256(path)
                sha = median_seconds(lambda: file_sha256(path), args.repeats)
                read = median_seconds(lambda: load_tensors(path), args.repeats)
                checked = median_seconds(lambda: load_tensors(path, expected_bytes=size, expected_sha256=digest),
                                         args.repeats)
                n_params = sum(t.numel() for t in tensors.values())
                print(f"{shape} {kind} file bytes: {size} ({n_params} values)")
                print(f"{shape} {kind} write ms (atomic + fsync + sha256): {write * 1e3:.1f}")
                print(f"{shape} {kind} sha256 ms: {sha * 1e3:.1f}")
                print(f"{shape} {kind} read ms: {read * 1e3:.1f}")
                print(f"{shape} {kind} read ms with size+sha256 check: {checked * 1e3:.1f}")
    print(f"1-min load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
