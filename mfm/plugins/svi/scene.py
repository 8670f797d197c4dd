"""The built-in scene encoders (E_scene, Eq. 8): offline stand-ins for LLaMA2 captions.

``mean`` (the default) is the mean of the group's four projected views; ``none`` drops
the scene term, so Eq. 9 contrasts the direction views alone. Both are registered
through the ``register_scene_encoders`` hook, like any third party's.
"""

from __future__ import annotations

from torch import Tensor

from mfm.core.scene import SceneEncoder


class MeanScene(SceneEncoder):
    """The offline stand-in for Eq. 8: the mean of the group's four projected views."""

    name = "mean"

    def forward(self, groups: Tensor, views: Tensor) -> Tensor | None:
        return views.mean(dim=1)


class NoScene(SceneEncoder):
    """No scene term: Eq. 9 on the direction views alone."""

    name = "none"

    def forward(self, groups: Tensor, views: Tensor) -> Tensor | None:
        return None
