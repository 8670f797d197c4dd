import pytest
import torch

from mfm.core.losses import InfoNCE, info_nce


def test_aligned_pairs_have_lower_loss_than_shuffled():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 8, generator=g)
    aligned = info_nce(a, a + 0.01 * torch.randn(16, 8, generator=g))
    shuffled = info_nce(a, a[torch.roll(torch.arange(16), 1)])
    assert aligned < shuffled
    assert aligned < torch.log(torch.tensor(16.0))  # better than chance


def test_matches_eq7_written_out():
    a, p = torch.randn(5, 3), torch.randn(5, 3)
    sim = torch.nn.functional.cosine_similarity(a[:, None], p[None], dim=-1) / 0.5
    expected = -(sim.diag() - sim.logsumexp(1)).mean()
    assert torch.allclose(info_nce(a, p, 0.5), expected, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        InfoNCE(tau=0)
    with pytest.raises(ValueError):
        info_nce(torch.randn(3, 2), torch.randn(4, 2))


def test_excluded_negatives_leave_the_denominator():
    import math

    import torch

    from mfm.core.losses import info_nce

    torch.manual_seed(0)
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[0, 1] = exclude[0, 0] = True  # the diagonal is never dropped
    got = info_nce(a, p, 0.5, exclude)
    sims = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(p, dim=1).T
    logits = sims / 0.5
    rows = [
        logits[i, i]
        - torch.logsumexp(logits[i][[j for j in range(4) if not exclude[i, j] or j == i]], 0)
        for i in range(4)
    ]
    assert math.isclose(float(got), float(-torch.stack(rows).mean()), rel_tol=1e-5)
    assert float(got) < float(info_nce(a, p, 0.5)) + 1e-6
