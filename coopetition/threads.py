"""``one_torch_thread``: torch on one thread for a block, then the caller's setting back.

Two places need it, for different reasons: a synthetic bank must be the same bits at any thread count (a matmul or
QR splits its work by thread count, and a run trained on 2 threads is rebuilt and checked on 1: ``bank.load_bank``),
and the toy model's tiny solves only pay a barrier per op for a second thread (a 60-row solve took 345 s instead of
6 s on a busy 2-core machine: ``toy.solve``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_torch_thread() -> Iterator[None]:
    import torch  # the bank module is imported by the CLI's parsers, which must not load torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
