"""Optimisation and seeds."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from coopetition.errors import ConfigError
from coopetition.interventions.base import CheckpointRef

WEIGHT_DECAY_FORMS = ("l2", "unsquared")
SEED_LIMIT = 2**32  # seeds are combined with small offsets (eval: seed * 1_000_003 + i) and must stay in int64
MAX_STEPS = 10**10
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class SeedConfig:
    """Three independent streams (reference C25: init 5, train 2, eval 1): model init, training data, eval sets."""

    init: int = 5
    train: int = 2
    eval: int = 1

    def __post_init__(self) -> None:
        for name in ("init", "train", "eval"):
            if not 0 <= getattr(self, name) < SEED_LIMIT:
                raise ConfigError(f"seeds.{name} must be in [0, 2**32), got {getattr(self, name)}")


def _step_schedule(name: str, first: str, value) -> tuple[float, float, float]:
    """``[factor, from_step, to_step]`` (``train.label_lr_ramp``, ``train.lr_decay``) checked and normalised: a
    factor in (0, 100] and 0 <= from_step <= to_step <= 1e10; anything else is a ConfigError naming the field."""
    try:
        factor, begin, end = (float(v) for v in value)
        valid = 0 < factor <= 100 and 0 <= int(begin) <= int(end) <= MAX_STEPS
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise ConfigError(f"train.{name} must be [{first} in (0, 100], from_step, to_step >= from_step], got {value}")
    return factor, float(int(begin)), float(int(end))


def _decay_schedule(value) -> tuple[float, float, float] | tuple[tuple[float, float, float], ...]:
    """``train.lr_decay`` checked: one ``[end_factor, from_step, to_step]`` segment (kept in that flat form, as
    runs recorded it before a second segment was possible), or a list of them in step order, each starting where
    the one before ended or later (``[[0.5, 5000, 7000], [0.25, 25000, 26000]]``: halved after ICL, quartered for
    the end)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        if len(value) > 16:
            raise ConfigError(f"train.lr_decay takes at most 16 segments, got {len(value)}")
        segments = tuple(_step_schedule("lr_decay", "end_factor", v) for v in value)
        for before, after in zip(segments, segments[1:]):
            if after[1] < before[2]:
                raise ConfigError(f"train.lr_decay segments must be in step order, each from_step >= the previous "
                                  f"to_step; got {[list(s) for s in segments]}")
        return segments
    return _step_schedule("lr_decay", "end_factor", value)


@dataclass(frozen=True)
class TrainConfig:
    """Adam with a constant learning rate, as in every reference run (``lr_decay``, ``label_lr_ramp`` and the
    class-specific scales below are departures for CPU presets, off by default).

    ``weight_decay`` adds ``wd * sum ||theta||^2`` (``l2``) or the reference's ``wd * sum ||theta_leaf||_2``
    over every parameter array (``unsquared``, group-lasso-like) to the loss. Schedules are strings
    (see ``coopetition.train.schedule``); ``eval_schedule`` None means "at every checkpoint". ``init_from``
    (``RUN@STEP``) starts from another run's weights with a fresh optimizer; steps still count from 0. The run keeps
    a copy of that checkpoint (``RUN/sources/``), so it can be re-trained (zoom) without the source run.

    ``resume_schedule`` says at which checkpoints the resume state (Adam moments, data RNG: about twice a checkpoint's
    size) is kept for good, so ``coopetition zoom`` re-trains a late window from a nearby state instead of from step
    0: None keeps every 10th checkpoint's, a schedule string keeps those at (or, between checkpoints, just before)
    its points, ``"none"`` keeps only the newest two that ``--resume`` needs.
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.0
    weight_decay_form: Literal["l2", "unsquared"] = "l2"
    checkpoint_schedule: str = "every:100"
    eval_schedule: str | None = None
    resume_schedule: str | None = None  # None: every 10th checkpoint; "none": only the newest two
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 50
    init_from: CheckpointRef | None = None  # RUN@STEP: start from that checkpoint's weights, fresh optimizer
    # Speed options. Each changes the last bits of a seeded run (docs/performance.md). compile and amp are off by
    # default; fused Adam is on: it follows the single-tensor kernel to ~1e-7 (tests/test_train_options.py) and
    # is ~5x faster. Runs written before it was the default say `"fused_adam": false` in their config.json, and
    # --resume keeps their kernel.
    compile: bool = False  # torch.compile the model for the training step (no hook interventions)
    fused_adam: bool = True  # PyTorch's fused Adam kernel (CPU and CUDA); false: the single-tensor kernel
    amp: bool = False  # bfloat16 autocast around the training forward (mixed precision)
    # the unembedding and cross-entropy as one blockwise kernel (model/fused_loss.py): same function to float
    # rounding, ~1e-6. Runs recorded before it existed read as false (store: RECORDED_BEFORE), so --resume and zoom
    # continue them with the kernel they were trained with. Not used with compile or amp, or hook interventions.
    fused_loss: bool = True
    # H1 of issue 27 (a departure from the reference, off at 1.0): learning-rate multipliers for the class-specific
    # parameters, the unembedding (W_U, b_U) and the label table (W_L). C25 trains at lr 1e-5 for 2M steps at batch
    # 32; a CPU preset at lr 1e-3 for 20k steps at batch 256 moves the shared weights the same Adam distance
    # (lr x steps = 20) but shows each class 8x as often per unit of that distance, so its own rows learn faster
    # relative to the shared circuit. A scale < 1 slows them back down: a time rescaling of C25's regime.
    unembed_lr_scale: float = 1.0
    label_lr_scale: float = 1.0
    # [start_scale, from_step, to_step]: the label table's scale is start_scale until from_step, then moves linearly
    # to label_lr_scale at to_step (issue 27: the class-specific route to CIWL sped up only once ICL has formed).
    # None: label_lr_scale throughout.
    label_lr_ramp: tuple[float, float, float] | None = None
    # [end_factor, from_step, to_step]: every learning rate (the class-specific scales included) is multiplied by 1
    # until from_step, then by a factor moving linearly to end_factor at to_step, and by end_factor after. A list of
    # such segments in step order chains them, each starting from the factor the one before reached. Issue 27:
    # after ICL has formed, CIWL's takeover at lr 1e-3 is limited by Adam's noise, not its step size (from one
    # checkpoint, lr 5e-4 moved flip and CIWL further in 4,000 steps than lr 1e-3, and lr 2e-3 least;
    # docs/quick_search.md); C25 itself runs at lr 1e-5 throughout. None: lr constant.
    lr_decay: tuple[float, float, float] | tuple[tuple[float, float, float], ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"train.steps must be in [0, 1e10], got {self.steps}")
        if not 1 <= self.batch_size <= 2**20:
            raise ConfigError(f"train.batch_size must be in [1, 2**20], got {self.batch_size}")
        if not (self.lr > 0 and self.lr < 10):
            raise ConfigError(f"train.lr must be in (0, 10), got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"train.weight_decay must be finite and >= 0, got {self.weight_decay}")
        if self.weight_decay_form not in WEIGHT_DECAY_FORMS:
            raise ConfigError(f"train.weight_decay_form must be one of {WEIGHT_DECAY_FORMS}, "
                              f"got {self.weight_decay_form!r}")
        if not DEVICE.match(self.device):
            raise ConfigError(f"train.device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise ConfigError(f"train.threads must be in [1, 1024] or null, got {self.threads}")
        for name in ("unembed_lr_scale", "label_lr_scale"):
            if not (0 < getattr(self, name) <= 100):
                raise ConfigError(f"train.{name} must be in (0, 100], got {getattr(self, name)}")
        if self.label_lr_ramp is not None:
            object.__setattr__(self, "label_lr_ramp", _step_schedule("label_lr_ramp", "start_scale",
                                                                     self.label_lr_ramp))
        if self.lr_decay is not None:
            object.__setattr__(self, "lr_decay", _decay_schedule(self.lr_decay))
        if self.log_every < 1:
            raise ConfigError(f"train.log_every must be >= 1, got {self.log_every}")
        from coopetition.train.schedule import schedule_steps  # the schedules are checked here, before any run

        schedule_steps(self.checkpoint_schedule, self.steps, self.batch_size)
        if self.eval_schedule is not None:
            schedule_steps(self.eval_schedule, self.steps, self.batch_size)
        if self.resume_schedule not in (None, "none"):
            schedule_steps(self.resume_schedule, self.steps, self.batch_size)
        if isinstance(self.init_from, str):  # Python callers may pass the text; it is parsed once, here
            object.__setattr__(self, "init_from", CheckpointRef.parse(self.init_from))
