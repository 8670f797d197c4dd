"""The cross-modal scale objectives (paper IV-B2 and IV-B4).

``local`` (Scale.LOCAL, Eq. 15-16) and ``global`` (Scale.GLOBAL, Eq. 23-27) are
objective-only plugins: each of :mod:`mfm.scales.local` and :mod:`mfm.scales.global_`
holds its ``register_objectives`` hookimpl, so both are always on and are skipped when
the views they need are missing. They never import a modality plugin: they consume
whatever POI and region views the selected plugins offer (``UrbanModel.offering``).
Shared parts: :mod:`mfm.scales.graph_encoder` (the GAT of Eq. 5, batched over star
graphs) and :mod:`mfm.scales.fusion` (RMHA and gated fusion, Eq. 23-25).
"""
