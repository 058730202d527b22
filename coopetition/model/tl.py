"""TransformerLens's permanent core, imported here and nowhere else: ``HookedRootModule``, ``HookPoint`` and
``ActivationCache`` (kept by TransformerLens 4, whose migration guide names them the supported way to give any
``nn.Module`` TransformerLens hooks). ``HookedRootModule`` lives at ``transformer_lens.HookedRootModule`` on 3.x and
4.x and only in ``transformer_lens.hook_points`` on 2.x (where 3.x warns and 4.x raises), so it is taken from the
package first.

Importing any of the three runs TransformerLens's package ``__init__``, which imports transformers and datasets
(2.x: ~3.5 CPU-s, 3.x: ~4.5, 4.x: ~2.7 on the 2-core box; the submodules alone still pull transformers through
their utilities: measured in docs/model.md). So this module is imported only where a network is built
(``coopetition.model`` loads it on first use of ``ICLTransformer``/``build_model``).
"""

from __future__ import annotations

import importlib.metadata

import transformer_lens
from transformer_lens import ActivationCache
from transformer_lens.hook_points import HookPoint

if hasattr(transformer_lens, "HookedRootModule"):  # 3.x, 4.x
    HookedRootModule = transformer_lens.HookedRootModule
else:  # 2.x
    from transformer_lens.hook_points import HookedRootModule

TL_VERSION = importlib.metadata.version("transformer-lens")
TL_MAJOR = int(TL_VERSION.split(".")[0])

__all__ = ["ActivationCache", "HookPoint", "HookedRootModule", "TL_MAJOR", "TL_VERSION"]
