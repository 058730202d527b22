"""ResNet-18 (He et al. 2016) in plain torch, with torchvision's module names, so that torchvision's ImageNet-1K-V1
file (``resnet18-f37072fd.pth``, a state dict) loads into it as it is.

The reference replaces ``fc`` by the identity and keeps it aside: ``features`` is the 512-d penultimate output
(``.../feat``) and ``fc(features)`` the 1000 ImageNet logits (``.../last``). We always run this definition, so the
numbers never depend on whether torchvision imports; torchvision is only asked for the weights when no file is given.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from coopetition.bounded import read_bytes
from coopetition.errors import DataError

IMAGENET1K_V1 = "resnet18-f37072fd.pth"  # torchvision's file name: its sha256 starts with f37072fd
IMAGENET1K_V1_SHA256_PREFIX = "f37072fd"
MAX_WEIGHTS_BYTES = 1 << 30


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """``forward`` returns the penultimate features; ``fc`` maps them to the logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        inplanes = 64
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, planes, stride),
                                                           BasicBlock(planes, planes)))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: Float[Tensor, "batch 3 h w"]) -> Float[Tensor, "batch 512"]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def seeded_resnet18(seed: int) -> ResNet18:
    """A random ResNet-18 from ``seed`` (torchvision's initialisation), for tests and offline stand-ins."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet18().eval()


def load_weights(path: Path) -> tuple[ResNet18, str]:
    """The model with ``path``'s state dict (a torch ``.pth`` read with ``weights_only`` or a ``.safetensors``) and
    the file's sha256. A file that is not a ResNet-18 state dict is a one-line ``DataError``."""
    data = read_bytes(Path(path), "ResNet-18 weights", MAX_WEIGHTS_BYTES)
    sha256 = hashlib.sha256(data).hexdigest()
    named = re.fullmatch(r"resnet18-([0-9a-f]{8,})\.pth", Path(path).name)
    if named and not sha256.startswith(named.group(1)):  # torchvision's own check: the name carries the hash
        raise DataError(f"{path} is not torchvision's file of that name: its sha256 starts with {sha256[:8]}, "
                        f"not {named.group(1)} (a partial or altered download?)")
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load

            state = load(data)
        else:
            buffer = io.BytesIO(data)  # torchvision's .pth is a pickle: only weights_only's restricted unpickler
            state = torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input, reported in one line
        raise DataError(f"cannot read ResNet-18 weights {path}: {type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
    return model_from_state(state, str(path)), sha256


def model_from_state(state, source: str) -> ResNet18:
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(f"{source} is not a state dict of tensors (expected torchvision's {IMAGENET1K_V1})")
    model = ResNet18()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(f"{source} is not a torchvision ResNet-18 state dict: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]} ({len(missing)} missing, {len(unexpected)} unexpected)")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise DataError(f"{source}: {name} has shape {tuple(state[name].shape)}, ResNet-18 has "
                            f"{tuple(tensor.shape)}")
        if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
            raise DataError(f"{source}: {name} holds NaN or inf")
    model.load_state_dict(state)
    return model.eval()


def torchvision_weights() -> tuple[ResNet18, str]:
    """ImageNet-1K-V1 through torchvision (which downloads and checks the file), for a site with a network."""
    try:
        from torchvision.models import ResNet18_Weights, resnet18
    except Exception as err:  # noqa: BLE001 - an ImportError or a torchvision built for another torch
        raise DataError(f"no --weights given and torchvision cannot load ({type(err).__name__}); download "
                        f"{IMAGENET1K_V1} and pass --weights FILE") from None
    weights = ResNet18_Weights.IMAGENET1K_V1
    resnet18(weights=weights)  # downloads into torch's hub cache, checking the file's hash prefix
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return load_weights(path)
