"""Shared fixtures: tiny banks and configs that train in seconds on a 2-core CPU."""

from __future__ import annotations

import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)
# One intra-op thread: the tests' tensors are tiny, and on a loaded 2-core machine two spinning threads made small
# forwards up to 10x slower (measured). Also keeps float reductions in one fixed order.
torch.set_num_threads(1)

from coopetition.bank import BankConfig, load_bank  # noqa: E402
from coopetition.config import RunConfig  # noqa: E402
from coopetition.model.config import ModelConfig  # noqa: E402
from coopetition.task.evaluators import EvalConfig  # noqa: E402
from coopetition.train.config import TrainConfig  # noqa: E402


@pytest.fixture
def small_bank():
    return load_bank(BankConfig(classes=64, exemplars=6, dim=16, within_class_noise=0.3, seed=3))


def tiny_run_config(**train_overrides) -> RunConfig:
    train = dict(steps=30, batch_size=16, lr=1e-3, checkpoint_schedule="every:10", eval_schedule="every:15",
                 threads=1, log_every=5)
    train.update(train_overrides)
    return RunConfig(
        bank=BankConfig(classes=48, exemplars=6, dim=16, within_class_noise=0.3, seed=3),
        model=ModelConfig(n_layers=2, d_model=16, n_heads=2),
        train=TrainConfig(**train),
        eval=EvalConfig(n_seqs=64, max_exemplars=3, batch_size=32),
    )


@pytest.fixture
def tiny_config() -> RunConfig:
    return tiny_run_config()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One complete tiny run per session (checkpoints 0, 10, 20, 30), shared by the hostile-run tests: copy it
    before changing it."""
    from coopetition.train.loop import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_run_config(), run, progress=False)
    return run


@pytest.fixture(scope="module")
def one_torch_thread():
    """Hundreds of tiny forward passes: a second torch thread on a busy 2-core machine only adds waiting. A module
    asks for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
