"""A finished run as a model: load it, embed any city with it (``mfm embed``).

``mfm.load(RUN_DIR).embed(CITY, out=DIR)`` encodes the city's frozen features with the
run's backbones (through the feature cache), applies the run's trained heads, fusion and
graph modules (``model.safetensors``), and writes what a run writes: the GeoParquet
embeddings, ``baselines.npz`` (the city's raw features and the untrained model) and a
``manifest.json`` that names the source run, so ``mfm eval DIR`` and ``mfm report DIR``
work on it as on a run.

Every city's frozen features are standardized over that city, in training as here: the
heads' input statistics come from the city being embedded, the rest from the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path

import numpy as np

from mfm.core.atomic import write_json
from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.constants import RUN_MANIFEST
from mfm.core.errors import MfmError, PluginError
from mfm.core.export import BASELINE_FILE, export_embeddings, raw_features, write_baselines
from mfm.core.model import UrbanModel
from mfm.core.pipeline import (
    RunPlan,
    build_model,
    city_record,
    outputs_record,
    plan_run,
    write_outputs,
)
from mfm.core.plugins import load_registry
from mfm.core.progress import console
from mfm.core.rundir import RunDir, RunManifest, claim_out, release_out
from mfm.core.trainer import Runtime, init_runtime
from mfm.core.weights import MODEL_FILE, read_model

CITY_STATISTICS = ("input_mean", "input_std")
"""Buffers computed from the city a model runs on (a head's input standardization)."""


@dataclass
class EmbedResult:
    """What ``embed`` wrote, and the embeddings themselves."""

    out: Path
    poi_embeddings: Path | None
    region_embeddings: Path | None
    manifest: Path
    poi: np.ndarray
    region: np.ndarray | None


class TrainedModel:
    """The trained model of a finished run directory (see :func:`load`)."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir).resolve()
        if not (self.run_dir / RUN_MANIFEST).is_file() or not (self.run_dir / MODEL_FILE).is_file():
            raise MfmError(
                f"{run_dir} is not a finished run ({RUN_MANIFEST} and {MODEL_FILE} needed); "
                "pass a directory written by `mfm run`"
            )
        self.manifest = RunDir(self.run_dir).manifest
        # a run from before contrast heads existed has none in its weights
        self.config = RunConfig.model_validate({"contrast_head": False, **self.manifest.config})
        self.objectives: list[str] = [s["name"] for s in self.manifest.stages]
        self.modalities: list[str] = list(self.manifest.modalities)

    def __repr__(self) -> str:
        return (
            f"TrainedModel({str(self.run_dir)!r}, modalities={self.modalities}, "
            f"objectives={self.objectives})"
        )

    def embed(
        self,
        city: City | Path | str,
        out: Path | str,
        *,
        device: str | None = None,
        overwrite: bool = False,
        quiet: bool = False,
    ) -> EmbedResult:
        """Embed ``city`` with this model and write the outputs into ``out``.

        Raises:
            MfmError: The city lacks a layer a modality of the model needs (the message
                says which plugins the city supports), a backbone changed since training,
                or ``out`` is not free (pass ``overwrite``).
        """
        t_start = time.perf_counter()
        city = city if isinstance(city, City) else City.load(city)
        out = Path(out)
        rt = init_runtime(device or self.config.device)
        config = self.config.model_copy(
            update={"city": Path(city.root), "out": out, "quiet": quiet}
        )
        plan = self._plan(config, city)
        identity = {"embedded_with": str(self.run_dir), "city": city_record(city)}
        created = claim_out(out, identity, resume=False, overwrite=overwrite)
        try:
            return self._embed(config, city, out, plan, rt, t_start)
        except BaseException:
            if created:
                release_out(out)
            raise

    def _plan(self, config: RunConfig, city: City) -> RunPlan:
        """The run's modalities and objectives on ``city``, or a one-line refusal."""
        registry = load_registry(require=config.plugins)
        needed = {m.name: m for info in registry.plugins.values() for m in info.modalities.values()}
        missing = [
            (name, layer)
            for name in self.modalities
            for layer in getattr(needed.get(name), "layers", ())
            if not city.has(layer)
        ]
        if missing:
            lacking = {n for n, _ in missing}
            usable = [
                info.name
                for info in registry.plugins.values()
                if set(info.modalities) & set(self.modalities)
                and not set(info.modalities) & lacking
            ]
            raise MfmError(
                f"the model of {self.run_dir} needs layer {missing[0][1]!r} (modality "
                f"{missing[0][0]}) that {city.root} lacks; add it, or train a run with "
                f"--plugins {','.join(usable) or '<none>'} on a city that has those"
            )
        try:
            plan = plan_run(config, city, registry)
        except PluginError as exc:
            raise MfmError(f"cannot embed {city.root} with {self.run_dir}: {exc}") from None
        have = [m.name for m in plan.modalities]
        if have != self.modalities:
            raise MfmError(
                f"{self.run_dir} was trained with modalities {self.modalities}, but only "
                f"{have} are installed and usable on {city.root}; install the run's plugins"
            )
        skipped = {e.objective: e.skip for e in plan.entries if e.skip is not None}
        lost = [o for o in self.objectives if o in skipped]
        if lost:
            raise MfmError(
                f"objective {lost[0]} of {self.run_dir} cannot run on {city.root} "
                f"({skipped[lost[0]]}); embed a city with the layers it needs"
            )
        for entry in plan.entries:  # only what the run trained (it may not have run one)
            if entry.skip is None and entry.objective not in self.objectives:
                entry.skip = "not trained in the source run"
        self._check_backbones(plan)
        return plan

    def _check_backbones(self, plan: RunPlan) -> None:
        recorded = self.manifest.backbones
        for mod in plan.modalities:
            now, then = mod.backbone(), recorded.get(mod.name)
            if then is not None and now != then:
                raise MfmError(
                    f"the {mod.name} backbone differs from the one {self.run_dir} was trained "
                    f"with ({then} there, {now} here); install the same model and weights"
                )

    def _load_weights(self, model: UrbanModel) -> None:
        weights, _ = read_model(self.run_dir / MODEL_FILE, model.device)
        own = model.state_dict()
        for key, value in own.items():
            if key.rsplit(".", 1)[-1] in CITY_STATISTICS:
                weights[key] = value
        unexpected = sorted(set(weights) - set(own))
        absent = sorted(set(own) - set(weights))
        if unexpected or absent:
            key = (unexpected or absent)[0]
            raise MfmError(
                f"{self.run_dir / MODEL_FILE} does not fit the model built for this city "
                f"({key!r} {'unexpected' if unexpected else 'missing'}); the plugins or "
                "their options changed since the run"
            )
        model.load_state_dict(weights)

    def _embed(
        self,
        config: RunConfig,
        city: City,
        out: Path,
        plan: RunPlan,
        rt: Runtime,
        t_start: float,
    ) -> EmbedResult:
        cache = FeatureCache(config.cache_dir)
        model, objectives = build_model(plan, city, config, cache, rt, config.quiet)
        raw_poi, raw_region = raw_features(model, city)
        init_poi, _, init_region = export_embeddings(model, objectives, city, rt.device)
        self._load_weights(model)
        poi, extra, region = export_embeddings(model, objectives, city, rt.device)
        write_baselines(
            out / BASELINE_FILE,
            {
                "raw_poi": raw_poi,
                "raw_region": raw_region,
                "untrained_poi": init_poi,
                "untrained_region": init_region,
            },
        )
        poi_path, region_path = write_outputs(out, city, poi, extra, region)
        manifest = {
            "mfm_version": dist_version("urban-mfm"),
            "created": datetime.now().isoformat(timespec="seconds"),
            "embedded_with": {"run": str(self.run_dir), "city": self.manifest.city.model_dump()},
            "config": config.model_dump(mode="json"),
            "city": city_record(city),
            "modalities": {m.name: m.fingerprint() for m in plan.modalities},
            "backbones": self.manifest.backbones,
            "objectives": [o.name for o in objectives],
            "feature_cache": {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses},
            "outputs": outputs_record(poi, region),
            "wall_seconds": round(time.perf_counter() - t_start, 2),
        }
        manifest_path = write_json(
            out / RUN_MANIFEST, RunManifest.model_validate(manifest).model_dump(mode="json")
        )
        if not config.quiet:
            files = [str(p) for p in (poi_path, region_path) if p is not None]
            console.print(f"[green]wrote[/] {', '.join(files)}")
            console.print(f"next: mfm eval {out}", highlight=False)
        return EmbedResult(out, poi_path, region_path, manifest_path, poi, region)


def load(run_dir: Path | str) -> TrainedModel:
    """The trained model of ``run_dir`` (a finished ``mfm run``), ready to ``embed``."""
    return TrainedModel(run_dir)
