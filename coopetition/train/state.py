"""Adam state <-> flat tensors keyed by parameter name, so it can live in safetensors (no pickle)."""

from __future__ import annotations

import torch
from torch import nn


def optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            out[f"optim/{names[id(param)]}/{key}"] = torch.as_tensor(value).clone()
    return out


def restore_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        prefix = f"optim/{name}/"
        state = {k[len(prefix):]: v.to(param.device) for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            if "step" in state:
                state["step"] = state["step"].to("cpu", torch.float32)
            optimizer.state[param] = state
