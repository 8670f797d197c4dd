"""The batched star-graph GAT (Eq. 5) shared by the local and global objectives."""

from __future__ import annotations

import pytest
import torch

from mfm.scales.graph_encoder import GraphEncoder, inverse_distance_weights, star_graphs

D = 16


def test_star_graphs_layout():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    weight = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0], [1.0, 0.3, 0.2]])
    g = star_graphs(mask, weight)
    assert g.num_nodes == 8
    assert g.centre.tolist() == [0, 3, 4]
    assert g.edge_index.shape[1] == 2 * 5 + 8  # both directions per neighbour + self loops
    edges = {
        (int(s), int(t)): float(w)
        for (s, t), w in zip(g.edge_index.T, g.edge_attr[:, 0], strict=True)
    }
    assert edges[(1, 0)] == edges[(0, 1)] == 1.0 and edges[(2, 0)] == 0.5
    assert edges[(7, 4)] == pytest.approx(0.2) and edges[(4, 4)] == 1.0
    assert not any(s in (0, 1, 2) and t >= 3 for s, t in edges)  # graphs stay disjoint
    assert g.into_centre.sum() == 5 + 3  # neighbour->centre edges and the centres' loops
    with pytest.raises(ValueError, match="centre"):
        star_graphs(torch.tensor([[False, True]]), torch.ones(1, 1))


def test_inverse_distance_weights():
    dist = torch.tensor([[10.0, 20.0, 40.0], [0.0, 5.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    w = inverse_distance_weights(dist, mask)
    assert torch.allclose(w[0], torch.tensor([1.0, 0.5, 0.25]))
    assert w[1, 0] == 1.0 and w[1, 2] == 0.0 and torch.isfinite(w).all()  # co-located: clamped


def _encode_one_by_one_and_batched(
    enc: GraphEncoder, sizes: list[int]
) -> tuple[list, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    k = max(sizes)
    mask = torch.zeros(len(sizes), 1 + k, dtype=torch.bool)
    for i, s in enumerate(sizes):
        mask[i, : 1 + s] = True
    weight = torch.rand(len(sizes), k, generator=gen) * mask[:, 1:]
    x = torch.randn(int(mask.sum()), D, generator=gen)
    batched = enc(x, star_graphs(mask, weight))
    alone, start = [], 0
    for i, s in enumerate(sizes):
        xi = x[start : start + 1 + s]
        start += 1 + s
        alone.append(enc(xi, star_graphs(mask[i : i + 1, : 1 + s], weight[i : i + 1, :s]))[0])
    return alone, batched


@pytest.mark.parametrize("conv", ["gat", "gatv2"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_batched_equals_alone(conv, layers, residual):
    torch.manual_seed(0)
    enc = GraphEncoder(D, heads=2, layers=layers, conv=conv, residual=residual)
    alone, batched = _encode_one_by_one_and_batched(enc, [3, 0, 5, 1])
    for i, out in enumerate(alone):
        assert torch.allclose(out, batched[i], atol=1e-5), f"graph {i} differs when batched"


def test_output_depends_on_neighbours_and_weights_and_trains_node_features():
    torch.manual_seed(0)
    enc = GraphEncoder(D, heads=2)
    mask = torch.ones(1, 4, dtype=torch.bool)
    x = torch.randn(4, D, requires_grad=True)
    w = torch.tensor([[1.0, 0.5, 0.1]])
    out = enc(x, star_graphs(mask, w))
    out.sum().backward()
    # gradients reach every node (nothing is detached: the paper's code trained nothing)
    assert (x.grad.abs().sum(1) > 0).all()
    assert all(p.grad is not None for p in enc.parameters())
    other = enc(x.detach(), star_graphs(mask, torch.tensor([[0.1, 0.5, 1.0]])))
    assert not torch.allclose(out, other)  # the edge weight is used
    perm = torch.tensor([0, 3, 1, 2])  # neighbour order does not matter
    same = enc(x.detach()[perm], star_graphs(mask, w[:, perm[1:] - 1]))
    assert torch.allclose(out, same, atol=1e-5)


def _centre_share(enc: GraphEncoder, k: int) -> float:
    """How much of the output moves with the centre's own input, among ``k`` neighbours."""
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(64, 1 + k, dtype=torch.bool)
    g = star_graphs(mask, torch.ones(64, k))
    x = torch.randn(int(mask.sum()), D, generator=gen)
    moved = x.clone()
    moved[g.centre] = torch.randn(64, D, generator=gen)
    with torch.no_grad():
        base, out = enc(x, g), enc(moved, g)
    return float((out - base).norm() / base.norm())


def test_residual_keeps_the_centre_among_many_neighbours():
    torch.manual_seed(0)
    plain = GraphEncoder(D, heads=2)
    torch.manual_seed(0)
    skip = GraphEncoder(D, heads=2, residual=True)
    assert sum(p.numel() for p in skip.parameters()) > sum(p.numel() for p in plain.parameters())
    # without the skip term the centre is 1 of 1 + K attended nodes: diluted as K grows
    assert _centre_share(plain, 12) < 0.5 * _centre_share(plain, 1)
    assert _centre_share(skip, 12) > 2 * _centre_share(plain, 12)


def test_unknown_conv_is_an_error():
    with pytest.raises(ValueError, match="conv"):
        GraphEncoder(D, conv="gcn")  # type: ignore[arg-type]
