"""A synthetic bank is a function of its config alone: the same bits at any torch thread count (a run trained with
2 threads is analysed with 1, and its bank is rebuilt and checked against the recorded fingerprint)."""

import pytest
import torch

from coopetition.bank import BankConfig, load_bank

FAMILY = dict(classes=12800, exemplars=20, dim=64, siblings=8, transforms=8, transform_share=0.85,
              drawing_noise=0.3, within_class_noise=0.3, shared_scale=2.0, rectify=True)


@pytest.mark.parametrize("fields", [FAMILY, dict(classes=12800, exemplars=20, dim=64, within_class_noise=0.5,
                                                 shared_scale=2.0, prototype_rank=16)], ids=["family", "clusters"])
def test_a_synthetic_bank_has_the_same_bits_at_any_thread_count(fields):
    threads = torch.get_num_threads()
    try:
        prints = []
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            prints.append(load_bank(BankConfig(**fields)).fingerprint())
            assert torch.get_num_threads() == n  # the caller's setting is left as it was
    finally:
        torch.set_num_threads(threads)
    assert prints[0] == prints[1] == prints[2]
