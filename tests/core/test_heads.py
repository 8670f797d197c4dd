"""ProjectionHead standardizes its inputs with the statistics it was given."""

import torch

from mfm.core.heads import ProjectionHead


def test_head_standardizes_with_given_statistics():
    torch.manual_seed(0)
    x = 5.0 + 0.01 * torch.randn(100, 8)  # nearly constant, like random-init image features
    x[:, 3] = 2.0  # a constant dimension is left unscaled
    head = ProjectionHead(8, 4, inputs=x)
    z = (x - x.mean(0)) / x.std(0)
    z[:, 3] = 0.0
    plain = torch.nn.Sequential(*head)  # the same layers without the standardization
    torch.testing.assert_close(head(x), plain(z), atol=1e-4, rtol=1e-4)
    assert "input_mean" in head.state_dict() and "input_std" in head.state_dict()


def test_head_without_inputs_is_the_identity_transform():
    head = ProjectionHead(8, 4)
    x = torch.randn(3, 8)
    torch.testing.assert_close(head(x), torch.nn.Sequential(*head)(x))
