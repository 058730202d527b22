"""A test hook: make the process SIGKILL itself at a named point of its life (``COOPETITION_FAULT=point[:n]``).

The crash-safety claims of ``docs/reliability.md`` ("a run killed at any moment resumes to the same bits") are
tested by killing real processes. Sleeping a fixed time before a kill lands wherever the loaded machine happens to
be; the short windows (the start of a run, the middle of a checkpoint write, an evaluation) are a few milliseconds
among minutes and are never hit. So the writers call ``fault_point("name")`` at the moments worth killing, and a
test sets ``COOPETITION_FAULT=name:n``: the n-th time (default 1) the process passes that point it sends itself
SIGKILL, exactly as ``kill -9`` from outside would (no handler, no ``finally``, no flush).

Unset (the normal case) a point costs one dict lookup. The variable is read at each pass, not at import, so a
process forked from a parent that imported the package (a forkserver) sees its own setting. This is a test hook, not
a user feature: a malformed value is ignored rather than reported.

Points (where each sits is documented at the call):

=====================  ======================================================================================
``startup``            ``train`` entered: the config is valid, nothing is built or written yet
``run_dir``            the run dir exists and is locked; nothing else is in it
``config_written``     ``config.json`` written; no eval sets, no manifest yet
``train_step``         after each training step (``n``: the n-th step this process takes)
``evaluate``           inside an evaluation, after its first batch (nothing of it written)
``atomic_write``       a file's temporary is complete and fsynced, not yet renamed into place (any file)
``checkpoint_files``   a checkpoint's weights and resume state are on disk, the manifest does not list them yet
``final_write``        training done, the last ``train.csv`` rows not yet written
``zoom_step``          after each re-training step of a zoom
``zoom_commit``        a zoom's checkpoints moved into place and ``eval_zoom.csv`` written, the manifest (its
                       commit) not yet
=====================  ======================================================================================
"""

from __future__ import annotations

import os
import signal

ENV = "COOPETITION_FAULT"
_passes: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process if ``COOPETITION_FAULT`` names ``name`` and this is its n-th pass."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == (int(count) if count.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)
