"""Scene encoders: the street-view group embedding E_scene of the paper's Eq. 8.

The paper captions each group's image features with LLaMA2 and encodes the caption with
the text encoder: ``E_scene = f_text(LLAMA2(f_image(sv.i)))``. That needs an LLM, so the
built-in ones are offline stand-ins (``mean``, ``none``; see the svi plugin). A plugin
brings another by subclassing :class:`SceneEncoder` and registering it through the
``register_scene_encoders`` hook; ``[plugin.svi] scene = "<name>"`` selects it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from mfm.core.errors import ConfigError

if TYPE_CHECKING:
    from mfm.core.modality import Context


class SceneEncoder(nn.Module):
    """Maps a batch of street-view groups to scene embeddings ``[B, d]`` (Eq. 8).

    The svi modality builds the one its options name and owns it (its parameters train
    with the modality). Compute and cache frozen inputs (e.g. caption embeddings) in
    ``prepare`` with ``ctx.cache``, project them to ``dim`` in ``forward``.
    """

    name: ClassVar[str]

    def prepare(self, ctx: Context, features: Tensor, dim: int) -> None:
        """Compute frozen inputs and build heads once per run.

        Args:
            ctx: the run context (city, cache, device).
            features: frozen image features of every group, ``[G, 4, F]`` (E, S, W, N).
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
        raise NotImplementedError(f"scene encoder {self.name!r} must implement forward()")


def build_scene_encoder(name: str, available: dict[str, type[SceneEncoder]]) -> SceneEncoder:
    """A new scene encoder of the registered class called ``name``."""
    if name not in available:
        raise ConfigError(
            f"unknown scene encoder {name!r} in [plugin.svi] scene; "
            f"choose one of {', '.join(sorted(available)) or 'none registered'}"
        )
    return available[name]()


def installed_scene_encoders() -> dict[str, type[SceneEncoder]]:
    """The scene encoders that the installed plugins register (a run passes its own)."""
    from mfm.core.plugins import load_registry

    return load_registry(require=()).scene_encoders
