"""What one toy-model run is: model (C25 four-vector or IH24 three-vector), sizes, loss weights, optimiser, seeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coopetition.errors import ConfigError

ToyModel = Literal["c25", "ih24"]
Method = Literal["gd", "ode"]
MODELS = ("c25", "ih24")
METHODS = ("gd", "ode")
VECTORS: dict[str, tuple[str, ...]] = {"c25": ("a", "b", "c", "d"), "ih24": ("a", "b", "c")}
MAX_DIM = 100_000
MAX_STEPS = 10_000_000


@dataclass(frozen=True)
class ToyConfig:
    """One minimal-model run, vectorised over ``seeds`` (REFERENCE.md section 7).

    - ``model``: ``c25`` optimises L = (L1 + mu1)(L2 + mu2) + alpha * C over vectors a, b, c, d;
      ``ih24`` optimises L1 alone over a, b, c.
    - ``dims``: (d_a, d_b, d_c, d_d) for c25, (d_a, d_b, d_c) for ih24.
    - ``lr`` and ``steps``: full-batch gradient descent (``method='gd'``) or RK4 on the gradient flow
      dtheta/dt = -grad L with time step ``lr`` (``method='ode'``); ``steps`` counts updates either way.
    - ``threshold``: a seed stops (and is frozen) at the first step where its total loss is below it; 0 never stops.
    - ``clamp``: ``(vector, k)`` pairs; the first k coordinates of that vector are set to the target at step 0 and
      never move (the reference overwrites them after every step, which is the same trajectory).
    - ``record_every``: steps between rows of the trace table (losses used for classification are tracked every step).
    """

    model: ToyModel = "c25"
    dims: tuple[int, ...] = (20, 20, 20, 160)
    alpha: float = 0.1
    mu1: float = 0.1
    mu2: float = 0.0
    lr: float = 1.0
    steps: int = 16_000
    seeds: tuple[int, ...] = tuple(range(12))
    threshold: float = 1e-6
    clamp: tuple[tuple[str, int], ...] = ()
    method: Method = "gd"
    record_every: int = 20

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {MODELS}, got {self.model!r}")
        names = VECTORS[self.model]
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "clamp", tuple((str(v), int(k)) for v, k in self.clamp))
        if len(self.dims) != len(names):
            raise ConfigError(f"dims for model {self.model!r} must have {len(names)} entries "
                              f"({', '.join('d_' + n for n in names)}), got {len(self.dims)}: {self.dims}")
        for name, d in zip(names, self.dims):
            if not 1 <= d <= MAX_DIM:
                raise ConfigError(f"d_{name} must be in [1, {MAX_DIM}], got {d}")
        for key in ("alpha", "mu1", "mu2"):
            value = float(getattr(self, key))
            if not 0.0 <= value <= 1e6:
                raise ConfigError(f"{key} must be in [0, 1e6], got {value}")
        if not 0.0 < self.lr <= 1e3:
            raise ConfigError(f"lr must be in (0, 1000], got {self.lr}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if not self.seeds:
            raise ConfigError("seeds must name at least one seed")
        if min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct integers >= 0, got {self.seeds}")
        if not 0.0 <= self.threshold < 1e6:
            raise ConfigError(f"threshold must be in [0, 1e6) (0 = never stop early), got {self.threshold}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 1 <= self.record_every <= self.steps:
            raise ConfigError(f"record_every must be in [1, steps={self.steps}], got {self.record_every}")
        dim_of = dict(zip(names, self.dims))
        for vector, k in self.clamp:
            if vector not in dim_of:
                raise ConfigError(f"clamp vector must be one of {names} for model {self.model!r}, got {vector!r}")
            if not 1 <= k <= dim_of[vector]:
                raise ConfigError(f"clamp of {vector!r} must hold 1..{dim_of[vector]} coordinates, got {k}")
        if len({v for v, _ in self.clamp}) != len(self.clamp):
            raise ConfigError(f"clamp names a vector twice: {self.clamp}")

    @property
    def vectors(self) -> tuple[str, ...]:
        """Vector names in ``dims`` order."""
        return VECTORS[self.model]

    @property
    def dim_of(self) -> dict[str, int]:
        return dict(zip(self.vectors, self.dims))


# The reference's settings, as named instances (REFERENCE.md 7.1, 7.2, 6.3 `toymodel`, `toymodel0`).
C25 = ToyConfig()
C25_MU0 = ToyConfig(mu1=0.0, threshold=1e-3)
IH24 = ToyConfig(model="ih24", dims=(20, 20, 20), steps=1000, seeds=(1,), threshold=0.0, record_every=5)
PRESETS: dict[str, ToyConfig] = {"c25": C25, "c25-mu0": C25_MU0, "ih24": IH24}

# IH24 Fig 5a compares these clamp conditions (whole vectors held at their targets).
IH24_CLAMPS: dict[str, tuple[str, ...]] = {"no clamp": (), "clamp c": ("c",), "clamp b, c": ("b", "c")}


def parse_clamp(text: str, cfg: ToyConfig) -> tuple[tuple[str, int], ...]:
    """Parse ``'c'`` / ``'b,c'`` / ``'c:5,b'`` (vector[:k], k defaults to the whole vector); ``'none'`` clears."""
    if text.strip().lower() in ("", "none"):
        return ()
    out = []
    for item in text.split(","):
        name, _, k = item.strip().partition(":")
        if name not in cfg.dim_of:
            raise ConfigError(f"clamp vector must be one of {cfg.vectors} for model {cfg.model!r}, got {name!r}")
        try:
            out.append((name, int(k) if k else cfg.dim_of[name]))
        except ValueError:
            raise ConfigError(f"clamp count after ':' must be an integer, got {k!r} in {text!r}") from None
    return tuple(out)
