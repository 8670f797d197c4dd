"""Scene encoders: the street-view group embedding E_scene of the paper's Eq. 8.

The paper captions each group's image features with LLaMA2 and encodes the caption
with the text encoder: ``E_scene = f_text(LLAMA2(f_image(sv.i)))``. That needs an LLM, so
the offline default here is ``mean``, the mean of the group's four projected views.
``none`` drops the scene term, so Eq. 9 contrasts the direction views alone.

A scene encoder is a small ``nn.Module`` registered by name; the ``svi`` modality builds
the one named by ``[plugin.svi] scene`` and owns it (its parameters train with the
modality). To plug an LLM-based encoder, subclass :class:`SceneEncoder`, compute and
cache the frozen caption embeddings in ``prepare`` (``ctx.cache``), project them to
``dim`` in ``forward``, and decorate the class with :func:`register_scene_encoder`
before the run config is read (e.g. at import time of the plugin that brings it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from torch import Tensor, nn

from mfm.core.errors import ConfigError

if TYPE_CHECKING:
    from mfm.core.modality import Context


class SceneEncoder(nn.Module):
    """Maps a batch of street-view groups to scene embeddings ``[B, d]`` (Eq. 8)."""

    name: ClassVar[str]

    def prepare(self, ctx: Context, features: Tensor, dim: int) -> None:
        """Compute frozen inputs and build heads once per run.

        Args:
            ctx: the run context (city, cache, device).
            features: frozen ResNet18 features of every group, ``[G, 4, 512]`` (E, S, W, N).
            dim: the common embedding width ``d``.
        """

    def forward(self, groups: Tensor, views: Tensor) -> Tensor | None:
        """Scene embeddings of ``groups`` ``[B]``.

        Args:
            groups: group indices ``[B]`` on the views' device.
            views: the groups' projected direction views ``[B, 4, d]``.

        Returns:
            ``[B, d]``, or None when the encoder adds no scene term.
        """
        raise NotImplementedError


SCENE_ENCODERS: dict[str, type[SceneEncoder]] = {}

S = TypeVar("S", bound=type[SceneEncoder])


def register_scene_encoder(cls: S) -> S:
    """Class decorator: make ``cls`` selectable as ``[plugin.svi] scene = cls.name``."""
    if cls.name in SCENE_ENCODERS and SCENE_ENCODERS[cls.name] is not cls:
        raise ValueError(f"scene encoder {cls.name!r} is already registered")
    SCENE_ENCODERS[cls.name] = cls
    return cls


def build_scene_encoder(name: str) -> SceneEncoder:
    """A new scene encoder registered under ``name``."""
    if name not in SCENE_ENCODERS:
        raise ConfigError(
            f"unknown scene encoder {name!r} in [plugin.svi] scene; "
            f"choose one of {', '.join(sorted(SCENE_ENCODERS))}"
        )
    return SCENE_ENCODERS[name]()


@register_scene_encoder
class MeanScene(SceneEncoder):
    """The offline stand-in for Eq. 8: the mean of the group's four projected views."""

    name = "mean"

    def forward(self, groups: Tensor, views: Tensor) -> Tensor | None:
        return views.mean(dim=1)


@register_scene_encoder
class NoScene(SceneEncoder):
    """No scene term: Eq. 9 on the direction views alone."""

    name = "none"

    def forward(self, groups: Tensor, views: Tensor) -> Tensor | None:
        return None
