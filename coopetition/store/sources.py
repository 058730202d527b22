"""Frozen checkpoints a run depends on: graft sources (``graft_in``/``graft_out``) and ``train.init_from``.

When a run starts, each source is opened as an untrusted run directory (``RunReader``), its checkpoint verified
against its manifest, and checked against ours: same architecture (every model field but ``init_rescale``), the
same input/label/output sizes and exemplar bank (fingerprint), and, for grafts, no interventions of its own. The run
then keeps a byte-for-byte copy of every source checkpoint in ``RUN/sources/`` (listed in its manifest with size
and sha256), and that copy is what ``--resume`` and every analysis of the run load: a run stays analysable when it
is moved, shared, or its source run is gone, and the weights that ran are the weights analysed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coopetition.config import RunConfig
from coopetition.errors import ConfigError, CoopetitionError, DataError
from coopetition.interventions import CheckpointRef, Graft, Intervened, validated
from coopetition.model.config import ModelConfig
from coopetition.store.checkpoint import load_tensors, verify_file
from coopetition.store.reader import RunReader

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model); readers never load the writer
    from coopetition.model import ICLTransformer
    from coopetition.store.writer import RunWriter


@dataclass(frozen=True)
class Source:
    """One verified source checkpoint: ``role`` is ``graft`` (``index``: the graft's position among the run's
    grafts) or ``init_from``."""

    role: str
    index: int
    spec: str
    path: Path
    step: int
    bytes: int
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.role}_{self.index}"


def open_source(ref: CheckpointRef, purpose: str, max_bytes: int | None = None) -> tuple[Path, int, int, str, dict]:
    """``(checkpoint path, step, bytes, sha256, the source run's config.json)`` after verifying the file. The source
    run is an untrusted run directory like any other: its entries must stay inside it (``store.contain``), its file
    must match its manifest and be no larger than ``max_bytes`` (checked before it is hashed)."""
    try:
        reader = RunReader.open(Path(ref.run))
    except CoopetitionError:
        raise ConfigError(f"{purpose} checkpoint {ref}: {ref.run} is not a coopetition run (no config.json)") from None
    try:
        listed, refused = reader.listed_checkpoints()
    except DataError as err:
        raise DataError(f"{purpose} checkpoint {ref}: {err}") from None
    if ref.step is not None and any(info.step == ref.step for info, _ in refused):
        raise DataError(f"{purpose} checkpoint {ref}: {next(r for info, r in refused if info.step == ref.step)}")
    steps = {info.step: info for info in listed}
    if not steps:
        raise ConfigError(f"{purpose} checkpoint {ref}: the run has no checkpoints")
    step = max(steps) if ref.step is None else ref.step
    if step not in steps:
        near = sorted(steps, key=lambda s: abs(s - step))[:3]
        raise ConfigError(f"{purpose} checkpoint {ref}: no checkpoint at step {step}; nearest: {sorted(near)}")
    info = steps[step]
    reason = verify_file(info.path, info.bytes, info.sha256, max_bytes=max_bytes)
    if reason:
        raise DataError(f"{purpose} checkpoint {ref}: corrupt file {info.path}: {reason}")
    try:
        meta = {"config": reader.run_config(), "derived": reader.derived()}
    except DataError as err:
        raise DataError(f"{purpose} checkpoint {ref}: {err}") from None
    return info.path, step, info.bytes, info.sha256, meta


def _max_bytes(like: ICLTransformer) -> int:
    """A source checkpoint has our architecture, so no more bytes than our own checkpoint's layout."""
    return like.checkpoint_layout().max_bytes


def _arch(config: ModelConfig) -> dict:
    """The fields that decide which weights mean what (the init scale does not)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "init_rescale"}


def check_source(meta: dict, ref: CheckpointRef, like: ICLTransformer, bank_fingerprint: str | None, purpose: str,
                 allow_intervened: bool) -> None:
    """Every mismatch between the source run (``meta``: its validated config and derived sizes) and ours is a
    one-line ConfigError."""
    source: RunConfig = meta["config"]
    derived = meta["derived"]
    ours = {**_arch(like.model_config), "input_dim": like.input_dim, "n_labels": like.n_labels,
            "n_outputs": like.n_outputs}
    theirs = {**_arch(source.model), **{k: derived.get(k) for k in ("input_dim", "n_labels", "n_outputs")}}
    differ = [f"{k} {theirs[k]} vs ours {ours[k]}" for k in ours if theirs[k] != ours[k]]
    if differ:
        raise ConfigError(f"{purpose} checkpoint {ref} has a different architecture: {', '.join(differ)}")
    theirs_bank = derived.get("bank_fingerprint")
    if bank_fingerprint is not None and theirs_bank != bank_fingerprint:
        raise ConfigError(f"{purpose} checkpoint {ref} was trained on another exemplar bank "
                          f"(fingerprint {theirs_bank} vs ours {bank_fingerprint})")
    if source.interventions and not allow_intervened:
        specs = [i.spec for i in source.interventions]
        raise ConfigError(f"{purpose} checkpoint {ref} was trained with interventions {specs}; "
                          f"grafting from an intervened run is not supported")


def resolve_sources(config: RunConfig, like: ICLTransformer, bank_fingerprint: str | None,
                    extra: tuple = ()) -> list[Source]:
    """Open and check every source that ``config`` (plus ``extra`` interventions, e.g. an analysis's own grafts)
    names: init_from first, then the grafts in order. Raises before anything is loaded."""
    found = []
    if config.train.init_from is not None:
        ref = config.train.init_from
        path, step, size, sha, meta = open_source(ref, "init_from", _max_bytes(like))
        check_source(meta, ref, like, bank_fingerprint, "init_from", allow_intervened=True)
        found.append(Source("init_from", 0, str(ref), path, step, size, sha))
    grafts = [i for i in (*config.interventions, *extra) if isinstance(i, Graft)]
    for index, graft in enumerate(grafts):
        path, step, size, sha, meta = open_source(graft.source, graft.name, _max_bytes(like))
        check_source(meta, graft.source, like, bank_fingerprint, graft.name, allow_intervened=False)
        found.append(Source("graft", index, graft.spec, path, step, size, sha))
    return found


def load_source_model(path: Path, like: ICLTransformer, size: int | None = None, sha256: str | None = None,
                      ) -> ICLTransformer:
    """A checkpoint file as a model of ``like``'s architecture, on its device."""
    from coopetition.model import build_model  # TransformerLens on first use

    device = next(like.parameters()).device
    model = build_model(like.model_config, like.input_dim, like.n_labels, like.n_outputs, init_seed=0, device=device)
    tensors, _ = load_tensors(path, device, size, sha256, model.checkpoint_layout())
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise DataError(f"source checkpoint {path} does not fit the model ({first})") from None
    return model


def keep_sources(writer: RunWriter, sources: list[Source]) -> list[dict]:
    """Copy every source checkpoint into the run (``RUN/sources/{role}_{index}.safetensors``); returns the
    provenance records for ``config.json``."""
    records = []
    for source in sources:
        data = source.path.read_bytes()
        if len(data) != source.bytes:
            raise DataError(f"source checkpoint {source.path} changed while the run started")
        writer.save_source(source.name, data, {"role": source.role, "index": source.index, "spec": source.spec,
                                               "step": source.step, "sha256_of_source": source.sha256})
        records.append({"role": source.role, "spec": source.spec, "checkpoint": str(source.path.resolve()),
                        "step": source.step, "sha256": source.sha256, "copy": f"sources/{source.name}.safetensors"})
    return records


def run_graft_models(reader: RunReader, config: RunConfig, like: ICLTransformer) -> list[ICLTransformer]:
    """The frozen graft sources of a trained run, from its own copies (``RUN/sources/``). A run written before
    runs kept copies falls back to opening the source runs its specs name."""
    grafts = [i for i in config.interventions if isinstance(i, Graft)]
    kept = {entry.index: (entry, path) for entry, path in reader.sources() if entry.role == "graft"}
    models = []
    for index, graft in enumerate(grafts):
        if index not in kept:
            path, _, size, sha, _ = open_source(graft.source, graft.name, _max_bytes(like))
            models.append(load_source_model(path, like, size, sha))
        else:
            entry, path = kept[index]
            models.append(load_source_model(path, like, entry.bytes, entry.sha256))
    return models


def extra_graft_models(interventions: tuple, like: ICLTransformer, bank_fingerprint: str | None) -> list:
    """Frozen sources of grafts that an analysis adds on top of a run's own (opened from the runs they name)."""
    models = []
    for graft in (i for i in interventions if isinstance(i, Graft)):
        path, _, size, sha, meta = open_source(graft.source, graft.name, _max_bytes(like))
        check_source(meta, graft.source, like, bank_fingerprint, graft.name, allow_intervened=False)
        models.append(load_source_model(path, like, size, sha))
    return models


def intervene_from_runs(interventions, model: ICLTransformer, bank_fingerprint: str | None = None):
    """``coopetition.interventions.intervene`` with every graft's frozen source opened (and checked) from the run
    its spec names: the Python entry point for grafting onto a model outside a training run."""
    checked = validated(tuple(interventions), model.model_config)
    return Intervened(model, checked, extra_graft_models(checked, model, bank_fingerprint))
