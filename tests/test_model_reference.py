"""Today's model against reference files written by the previous release (``HookedTransformer`` with lean blocks)
under TransformerLens 2.18 and 3.9 (``tests/data/model_ref/make.py``): the same initial weights from the seed, every
checkpoint of either line loads (2.18's ``mask`` buffer and 3.9's empty one alike), and every cached activation, the
logits and one training step's gradients agree. Runs on whatever TransformerLens line is installed."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coopetition.model import build_model
from tests.data.model_ref.make import DIM, LABELS, OUTPUTS, SEED, VARIANTS

REF = Path(__file__).parent / "data" / "model_ref"
CASES = [(tag, name) for tag in ("tl2", "tl3") for name in VARIANTS]
ATOL = 2e-6  # float32 rounding of a reordered sum; the values are O(1)


def _section(ref: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix)}


@pytest.fixture(params=CASES, ids=[f"{t}-{n}" for t, n in CASES])
def case(request):
    tag, name = request.param
    return VARIANTS[name], load_file(REF / f"{tag}_{name}.safetensors"), tag


def test_the_seed_gives_the_old_initial_weights_and_an_old_checkpoint_loads(case):
    config, ref, tag = case
    model = build_model(config, DIM, LABELS, OUTPUTS, init_seed=SEED)
    old = _section(ref, "state.")
    legacy = {k for k in old if k.rsplit(".", 1)[-1] in ("mask", "IGNORE", "rotary_sin", "rotary_cos")}
    assert legacy and {k for k in old if k.endswith(".mask")}  # the file has what the old line stored
    assert set(model.state_dict()) == set(old) - legacy
    for name, value in model.state_dict().items():
        assert torch.equal(value, old[name]), name  # bit for bit: init is a pure function of the seed
    mask = next(v for k, v in old.items() if k.endswith(".mask"))
    assert mask.shape == ((config.max_seq_len,) * 2 if tag == "tl2" else (0, 0))
    fresh = build_model(config, DIM, LABELS, OUTPUTS, init_seed=SEED + 1)
    layout = fresh.checkpoint_layout()
    assert not [k for k, v in old.items() if layout.problem(k, _dtype(v), list(v.shape))]
    assert not layout.missing(set(old))
    fresh.load_state_dict(old)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


def _dtype(t: torch.Tensor) -> str:
    return {torch.float32: "F32", torch.bool: "BOOL", torch.int64: "I64"}[t.dtype]


def test_every_activation_and_the_logits_match(case):
    config, ref, tag = case
    model = build_model(config, DIM, LABELS, OUTPUTS, init_seed=0)
    model.load_state_dict(_section(ref, "state."))
    model.eval()
    x, y = ref["input.exemplars"], ref["input.labels"]
    with torch.no_grad():
        logits, cache = model.run_cached(x, y)
        with model.per_head_hooks():
            _, head_cache = model.run_cached(x, y)
        all_logits = model(x, y, positions="all")
    torch.testing.assert_close(logits, ref["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(all_logits, ref["logits_all"], atol=ATOL, rtol=0)
    for got, prefix in ((cache, "cache."), (head_cache, "head_cache.")):
        want = {k: v for k, v in _section(ref, prefix).items() if not k.startswith("unembed.")}  # TL 3's hook_in/out
        assert set(got.keys()) == set(want), prefix
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, atol=ATOL, rtol=0, msg=f"{prefix}{name}")


def test_one_training_step_has_the_same_gradients(case):
    config, ref, tag = case
    model = build_model(config, DIM, LABELS, OUTPUTS, init_seed=SEED)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(ref["input.exemplars"], ref["input.labels"]), ref["input.targets"])
    loss.backward()
    torch.testing.assert_close(loss.reshape(1), ref["loss"], atol=ATOL, rtol=0)
    grads = _section(ref, "grad.")
    assert set(grads) == {k for k, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], atol=ATOL, rtol=0, msg=name)
