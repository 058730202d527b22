"""A run on disk, and what a run's config builds from it.

``run.Run`` is the one handle readers use (analyze, resume, zoom, recipes, notebooks). Behind it: ``reader``
(``RunReader``: everything through the manifest), ``writer`` (``RunWriter`` and ``RunWriter.opened``, the one context
manager a process writes a run under), ``lock`` (the OS lock), ``manifest`` (the manifest's typed schema),
``contain`` (which files a run may name), ``atomic``, ``checkpoint`` (safetensors files), ``provenance`` (versions and
times), and what a run's config builds: ``build`` (bank, pool, sizes, model), ``evalsets``, ``sources`` (frozen
source checkpoints: grafts, init_from)."""
