"""Grafts and init_from: which weights run, which learn, and bad sources rejected before training starts."""

import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from coopetition.errors import ConfigError
from coopetition.interventions import intervene
from coopetition.store.checkpoint import file_sha256, load_tensors
from coopetition.store.reader import RunReader
from coopetition.train.evaluate import evaluate, prepare_eval_sets
from coopetition.train.loop import train
from coopetition.store.build import derive_sizes, load_run_bank, model_for
from coopetition.store.evalsets import eval_sets_for
from coopetition.store.sources import intervene_from_runs, resolve_sources
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny trained run (10 steps) to graft from."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    train(tiny_run_config(steps=10, checkpoint_schedule="every:10", eval_schedule="every:10"), run_dir,
          progress=False)
    return run_dir


def fresh_model(config=None, seed=7):
    config = config or tiny_run_config()
    config = replace(config, seeds=replace(config.seeds, init=seed))
    bank = load_run_bank(config)
    return model_for(config, derive_sizes(config, bank)), bank


def batch(model, n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    exemplars = torch.randn(n, 3, model.input_dim, generator=gen)
    labels = torch.stack([torch.randperm(model.n_labels, generator=gen)[:2] for _ in range(n)])
    return exemplars, labels, labels[torch.arange(n), torch.randint(0, 2, (n,), generator=gen)]


def source_model(run_dir, step=10):
    model, _ = fresh_model(seed=0)
    model.load_state_dict(load_tensors(run_dir / "checkpoints" / f"step_{step:011d}.safetensors")[0])
    return model


def test_graft_out_runs_our_early_layers_into_the_frozen_late_layers(source):
    ours, bank = fresh_model()
    wrapped = intervene_from_runs((f"graft_out:{source}@10:0",), ours, bank.fingerprint())
    frozen = source_model(source)
    exemplars, labels, _ = batch(ours)
    _, cache = ours.run_cached(exemplars, labels)
    residual = frozen.blocks[1](cache["blocks.0.hook_resid_post"])
    expected = frozen.unembed(frozen.ln_final(residual))[:, -1]
    torch.testing.assert_close(wrapped(exemplars, labels), expected, rtol=0, atol=1e-5)


def test_graft_in_runs_our_late_layers_on_the_frozen_residual(source):
    ours, bank = fresh_model()
    wrapped = intervene_from_runs((f"graft_in:{source}@last:0",), ours, bank.fingerprint())
    frozen = source_model(source)
    exemplars, labels, _ = batch(ours)
    _, cache = frozen.run_cached(exemplars, labels)
    residual = ours.blocks[1](cache["blocks.0.hook_resid_post"])
    torch.testing.assert_close(wrapped(exemplars, labels), ours.unembed(ours.ln_final(residual))[:, -1],
                               rtol=0, atol=1e-5)
    trainable = {id(p) for p in wrapped.trainable_parameters()}
    assert id(ours.blocks[1].attn.W_Q) in trainable and id(ours.unembed.W_U) in trainable
    assert id(ours.embed.W_x) not in trainable and id(ours.blocks[0].attn.W_Q) not in trainable


def test_graft_out_gradients_reach_only_our_early_layers_and_frozen_weights_never_change(source):
    ours, bank = fresh_model()
    wrapped = intervene_from_runs((f"graft_out:{source}@10:0",), ours, bank.fingerprint())
    frozen = wrapped.sources[0]
    frozen_before = {k: v.clone() for k, v in frozen.state_dict().items()}
    ours_before = {k: v.clone() for k, v in ours.state_dict().items()}
    optimizer = torch.optim.Adam(wrapped.trainable_parameters(), lr=1e-2)
    for step in range(3):
        exemplars, labels, target = batch(ours, seed=step)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(wrapped(exemplars, labels, target), target).backward()
        if step == 0:
            grads = {n: p.grad for n, p in ours.named_parameters()}
            assert all(grads[n] is not None and grads[n].abs().sum() > 0
                       for n in ("embed.W_x", "embed.W_L", "pos_embed.W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.W_V"))
            assert all(g is None for n, g in grads.items() if n.startswith(("blocks.1.", "ln_final.", "unembed.")))
            assert all(p.grad is None for p in frozen.parameters())
        optimizer.step()
    after = ours.state_dict()
    assert all(torch.equal(frozen.state_dict()[k], v) for k, v in frozen_before.items())
    assert all(torch.equal(after[k], v) for k, v in ours_before.items() if k.startswith(("blocks.1.", "unembed.")))
    assert not torch.equal(after["blocks.0.attn.W_Q"], ours_before["blocks.0.attn.W_Q"])


def test_other_interventions_address_the_grafted_network(source):
    ours, bank = fresh_model()
    wrapped = intervene_from_runs((f"graft_out:{source}@10:0", "induction:1:0:1.0"), ours, bank.fingerprint())
    exemplars, labels, target = batch(ours)
    _, cache = wrapped.run_cached(exemplars, labels, target)
    correct = torch.where(labels[:, 0] == target, 1, 3)
    assert (cache["blocks.1.attn.hook_pattern"][torch.arange(12), 0, -1, correct] == 1).all()
    assert not any(p.requires_grad for p in wrapped.sources[0].parameters())


def test_training_with_graft_out_keeps_the_source_and_evaluates_intervened(tmp_path, source):
    sha = file_sha256(source / "checkpoints" / "step_00000000010.safetensors")
    config = replace(tiny_run_config(steps=10, eval_schedule="every:10"),
                     interventions=(f"graft_out:{source}@10:0",))
    train(config, tmp_path / "run", progress=False)
    assert file_sha256(source / "checkpoints" / "step_00000000010.safetensors") == sha
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["config"]["interventions"] == [f"graft_out:{source}@10:0"]
    assert meta["derived"]["sources"][0]["step"] == 10
    kept, _ = RunReader.open(tmp_path / "run").sources()[0]  # the run keeps the very bytes it grafted
    assert kept.sha256 == sha and file_sha256(tmp_path / "run" / kept.file) == sha
    first, last = (load_tensors(tmp_path / "run" / "checkpoints" / f"step_{s:011d}.safetensors")[0] for s in (0, 10))
    assert torch.equal(first["blocks.1.attn.W_Q"], last["blocks.1.attn.W_Q"])  # bypassed: never updated
    assert not torch.equal(first["blocks.0.attn.W_Q"], last["blocks.0.attn.W_Q"])


def test_an_intervention_active_in_training_is_active_in_that_runs_evaluation(tmp_path):
    config = replace(tiny_run_config(steps=10, eval_schedule="every:10"), interventions=("ablate:0:*,1:0",))
    train(config, tmp_path / "run", progress=False)
    bank = load_run_bank(config)
    model = model_for(config, derive_sizes(config, bank))
    model.load_state_dict(load_tensors(tmp_path / "run" / "checkpoints" / "step_00000000010.safetensors")[0])
    prepared = prepare_eval_sets(eval_sets_for(config, bank), bank.features)
    recorded = RunReader.open(tmp_path / "run").eval_table().query("step == 10 and metric == 'loss'")
    recorded = recorded.set_index("evaluator").value
    intervened = evaluate(model, prepared, 32, intervene(config.interventions, model))
    bare = evaluate(model, prepared, 32)
    for evaluator, value in recorded.items():
        assert intervened[(evaluator, "loss")] == pytest.approx(value, rel=1e-4)
    assert any(abs(bare[(e, "loss")] - v) > 1e-3 for e, v in recorded.items())


def test_init_from_loads_the_weights_and_starts_a_fresh_optimizer(tmp_path, source):
    config = tiny_run_config(steps=0, init_from=f"{source}@10")
    train(config, tmp_path / "run", progress=False)
    loaded = load_tensors(tmp_path / "run" / "checkpoints" / "step_00000000000.safetensors")[0]
    original = load_tensors(source / "checkpoints" / "step_00000000010.safetensors")[0]
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    resume = load_tensors(tmp_path / "run" / "resume" / "step_00000000000.safetensors")[0]
    assert not any(k.startswith("optim/") for k in resume)  # no Adam state carried over
    assert json.loads((tmp_path / "run" / "config.json").read_text())["derived"]["init_from_step"] == 10


def edited_copy(source, tmp_path, edit):
    copy = tmp_path / "edited"
    shutil.copytree(source, copy)
    meta = json.loads((copy / "config.json").read_text())
    edit(meta)
    (copy / "config.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("spec, message", [
    ("graft_out:{other}@10:0", "different architecture: n_heads 4 vs ours 2"),
    ("graft_out:{source}@11:0", "no checkpoint at step 11"),
    ("graft_in:{missing}@10:0", "is not a coopetition run"),
])
def test_bad_graft_sources_are_one_line_errors_before_anything_is_written(tmp_path, source, spec, message):
    def four_heads(meta):
        meta["config"]["model"]["n_heads"] = 4
    other = edited_copy(source, tmp_path, four_heads)
    config = replace(tiny_run_config(), interventions=(spec.format(other=other, source=source,
                                                                   missing=tmp_path / "nope"),))
    with pytest.raises(ConfigError, match=message) as err:
        train(config, tmp_path / "run", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_graft_from_another_bank_or_an_intervened_run_is_refused(tmp_path, source):
    def other_bank(meta):
        meta["derived"]["bank_fingerprint"] = "0" * 16
    ours, bank = fresh_model()
    with pytest.raises(ConfigError, match="another exemplar bank"):
        intervene_from_runs((f"graft_out:{edited_copy(source, tmp_path / 'a', other_bank)}@10:0",), ours, bank.fingerprint())

    def intervened(meta):
        meta["config"]["interventions"] = ["ablate:0:0"]
    with pytest.raises(ConfigError, match="trained with interventions"):
        intervene_from_runs((f"graft_out:{edited_copy(source, tmp_path / 'b', intervened)}@10:0",), ours, bank.fingerprint())
    with pytest.raises(ConfigError, match="different architecture"):
        config = replace(tiny_run_config(init_from=f"{source}@10"), model=replace(tiny_run_config().model, n_layers=1))
        other, _ = fresh_model(config)
        resolve_sources(config, other, bank.fingerprint())


def test_training_curve_is_recorded_with_graft(tmp_path, source):
    config = replace(tiny_run_config(steps=20, eval_schedule="every:10", checkpoint_schedule="every:20"),
                     interventions=(f"graft_out:{source}@10:0",))
    train(config, tmp_path / "run", progress=False)
    loss = pd.read_csv(tmp_path / "run" / "train.csv").query("metric == 'loss'").value
    assert loss.notna().all() and len(loss) == 4
