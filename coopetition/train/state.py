"""Everything besides the weights that a resumed run needs to continue bit-identically, as flat tensors for
safetensors (no pickle): Adam's moments and step counts keyed by parameter name, the data generator's state, and
the partial training-loss interval (so train.csv rows fall on the same steps)."""

from __future__ import annotations

import torch
from torch import nn

from coopetition.bounded import TensorLayout
from coopetition.errors import DataError
from coopetition.store.checkpoint import layout_bytes, safetensors_dtype

MAX_RNG_STATE = 1 << 16  # bytes of a generator state (CPU: 5056, CUDA: 16)


def optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            out[f"optim/{names[id(param)]}/{key}"] = torch.as_tensor(value).clone()
    return out


def restore_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    optimizer.state.clear()  # a failed earlier attempt must not leave moments behind
    group = optimizer.param_groups[0]
    on_device = bool(group.get("fused") or group.get("capturable"))  # these kernels keep Adam's step count there
    for name, param in model.named_parameters():
        prefix = f"optim/{name}/"
        state = {k[len(prefix):]: v.to(param.device) for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            if "step" in state:
                state["step"] = state["step"].to(param.device if on_device else "cpu", torch.float32)
            optimizer.state[param] = state


def resume_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, data_gen: torch.Generator,
                   running_loss: torch.Tensor, since_log: int) -> dict[str, torch.Tensor]:
    """The resume state at a checkpoint: ``running_loss`` summed over the ``since_log`` steps not yet logged."""
    return {**optimizer_tensors(model, optimizer), "rng/train": data_gen.get_state(),
            "loop/running_loss": running_loss.detach().reshape(()).clone(),
            "loop/since_log": torch.tensor(since_log, dtype=torch.int64)}


def resume_layout(model: nn.Module) -> TensorLayout:
    """What a resume state of ``model`` may hold (Adam moments shaped like each parameter, its step count, the RNG
    state and the loop counters), checked on the file's header before its data is read."""
    spec: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    for name, param in model.named_parameters():
        dtype = safetensors_dtype(param.dtype)
        spec |= {f"optim/{name}/exp_avg": (dtype, tuple(param.shape)),
                 f"optim/{name}/exp_avg_sq": (dtype, tuple(param.shape)), f"optim/{name}/step": ("F32", ())}
    spec |= {"loop/running_loss": ("F32", ()), "loop/since_log": ("I64", ())}
    sized = layout_bytes(spec) + MAX_RNG_STATE
    spec["rng/train"] = ("U8", None)
    return TensorLayout(spec, required=frozenset({"rng/train", "loop/running_loss", "loop/since_log"}),
                        max_tensors=len(spec), max_bytes=sized)


def restore_resume(model: nn.Module, optimizer: torch.optim.Optimizer, data_gen: torch.Generator,
                   tensors: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, int]:
    """Apply a resume state (after the weights are loaded); returns ``(running_loss, since_log)``."""
    missing = [k for k in ("rng/train", "loop/running_loss", "loop/since_log") if k not in tensors]
    if missing:
        raise DataError(f"resume state lacks {missing}")
    try:
        data_gen.set_state(tensors["rng/train"].to("cpu"))
    except (RuntimeError, TypeError) as err:
        raise DataError(f"resume state holds an unusable data-RNG state ({str(err).splitlines()[0]})") from None
    restore_optimizer(model, optimizer, tensors)
    return tensors["loop/running_loss"].to(device).clone(), int(tensors["loop/since_log"])
