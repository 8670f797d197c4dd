"""``run``: compose a model from the selected plugins, train it stage by stage, export."""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from rich.table import Table

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig, plugin_options
from mfm.core.constants import (
    LAYERS,
    POI_EMBEDDINGS,
    POI_ID,
    REGION_EMBEDDINGS,
    REGION_ID,
    RUN_MANIFEST,
)
from mfm.core.embed import write_embeddings, write_json
from mfm.core.errors import MfmError, PluginError
from mfm.core.export import BASELINE_FILE, export_embeddings, raw_features, write_baselines
from mfm.core.heads import ContrastHead
from mfm.core.killpoints import kill_point
from mfm.core.modality import Context, Modality
from mfm.core.model import UrbanModel
from mfm.core.objective import Objective
from mfm.core.plugins import PluginInfo, Registry, load_registry
from mfm.core.progress import console, log
from mfm.core.rundir import (
    CHECKPOINTS,
    RunManifest,
    claim_out,
    default_out,
    release_out,
    run_identity,
)
from mfm.core.scales import SLOT_DESCRIPTIONS, Scale
from mfm.core.scene import SceneEncoder
from mfm.core.trainer import Runtime, Trainer, TrainSettings, init_runtime
from mfm.core.views import Views
from mfm.core.weights import MODEL_FILE, round_to_shipped, save_model


@dataclass
class PlanEntry:
    """One objective in the run plan: it runs, or why it is skipped."""

    objective: str
    scale: Scale
    plugin: str
    skip: str | None = None
    note: str | None = None  # how it runs (the objective's plan_note)
    module: Objective | None = None  # the objective itself, bound to the run's views


@dataclass
class RunPlan:
    """What a run will do, decided before any feature is computed."""

    plugins: list[PluginInfo]
    modalities: list[Modality]
    entries: list[PlanEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scene_encoders: dict[str, type[SceneEncoder]] = field(default_factory=dict)

    @property
    def objectives(self) -> list[str]:
        """Names of the objectives that run, in stage order."""
        return [e.objective for e in self.entries if e.skip is None]

    @property
    def runnable(self) -> list[Objective]:
        """The objectives that run, in stage order (built and bound once, here)."""
        return [e.module for e in self.entries if e.skip is None and e.module is not None]

    def table(self) -> Table:
        t = Table(title="run plan", title_justify="left")
        for col in ("slot", "objective", "plugin", "status"):
            t.add_column(col)
        for scale in Scale:
            rows = [e for e in self.entries if e.scale == scale]
            if not rows:
                t.add_row(scale.label, "-", "-", "[dim]no objective registered[/]")
            for e in rows:
                status = "[green]runs[/]" if e.skip is None else f"[yellow]skipped:[/] {e.skip}"
                if e.skip is None and e.note:
                    status += f": {escape(e.note)}"
                t.add_row(scale.label, e.objective, e.plugin, status)
        return t


@dataclass
class RunResult:
    """Where a run wrote its outputs."""

    out: Path
    poi_embeddings: Path | None  # None for a city without POIs
    region_embeddings: Path | None
    manifest: Path
    poi: np.ndarray
    region: np.ndarray | None
    model: UrbanModel | None = None


def plan_run(config: RunConfig, city: City, registry: Registry | None = None) -> RunPlan:
    """Select plugins, build modalities and objectives, and decide which objectives run."""
    registry = registry or load_registry(require=config.plugins)
    chosen = registry.select(config.plugins)
    notes: list[str] = []
    modalities: list[Modality] = []
    for info in chosen:
        for name, cls in info.modalities.items():
            missing = [layer for layer in cls.layers if not city.has(layer)]
            if missing:
                message = (
                    f"plugin {info.name!r} needs layer {missing[0]!r} in {city.root}/city.toml "
                    f"[layers]; add it or drop {info.name} from --plugins"
                )
                if config.plugins is not None:
                    raise PluginError(message)
                notes.append(f"modality {name} off: the city has no {missing[0]} layer")
                continue
            modality = cls(plugin_options(config, "plugin", name, cls.Options))
            reason = modality.unavailable(city)
            if reason is not None:
                if config.plugins is not None:
                    raise PluginError(f"plugin {info.name!r}: {reason}")
                notes.append(f"modality {name} off: {reason}")
                continue
            modalities.append(modality)
    if not modalities:
        raise PluginError("no modality can run on this city; check --plugins and the city layers")
    plan = RunPlan(chosen, modalities, notes=notes, scene_encoders=registry.scene_encoders)
    views = Views(modalities)
    for info in registry.plugins.values():
        for name, cls in info.objectives.items():
            obj_scale = cls.scale
            entry = PlanEntry(name, obj_scale, info.name)
            if info not in chosen:
                entry.skip = f"plugin {info.name} not selected: add it to --plugins"
            elif info.is_modality_plugin and not any(m.name in info.modalities for m in modalities):
                entry.skip = f"plugin {info.name} has no usable modality"
            elif obj_scale not in config.scales:
                entry.skip = "slot dropped by --scales"
            else:
                entry.module = cls(plugin_options(config, "objective", name, cls.Options))
                entry.module.bind(views)
                entry.skip = entry.module.skip_reason(city)
                entry.note = entry.module.plan_note(city) if entry.skip is None else None
            plan.entries.append(entry)
    for name, record in registry.unloaded.items():  # known from the index, never imported
        for obj in record["objectives"]:
            skip = f"plugin {name} not selected: add it to --plugins"
            plan.entries.append(PlanEntry(obj["name"], Scale.parse(obj["scale"]), name, skip))
    plan.entries.sort(key=lambda e: e.scale)  # stable: registration order within a slot
    return plan


def run(
    config: RunConfig,
    resume: bool = False,
    registry: Registry | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Train UrbanMFM on ``config.city`` with the selected plugins and write embeddings."""
    if config.city is None:
        raise MfmError("no city given; pass --city DIR (the CLI defaults to the synthetic city)")
    t_start = time.perf_counter()
    rt = init_runtime(config.device)
    city = City.load(config.city)
    out = Path(config.out or default_out())
    quiet = config.quiet or not rt.is_main
    plan = plan_run(config, city, registry)  # before --out is touched: a bad plan leaves none
    identity = run_identity(config, city, [m.name for m in plan.modalities], plan.objectives)
    created = claim_out(out, identity, resume, overwrite) if rt.is_main else False
    try:
        return _train_and_export(config, resume, rt, city, out, plan, quiet, t_start)
    except Exception:
        if created and rt.is_main:
            release_out(out)
        raise


def _train_and_export(
    config: RunConfig,
    resume: bool,
    rt: Runtime,
    city: City,
    out: Path,
    plan: RunPlan,
    quiet: bool,
    t_start: float,
) -> RunResult:
    """Prepare, train and export a planned run into its claimed folder."""
    if rt.is_main:
        console.print(
            f"city [bold]{city.name}[/] ({city.root}), device {rt.device}, {rt.world} process(es)"
        )
        for scale in Scale:
            console.print(f"  {scale.label:<7} {SLOT_DESCRIPTIONS[scale]}", style="dim")
        console.print(plan.table())
        for note in plan.notes:
            log(f"note: {note}")

    cache = FeatureCache(config.cache_dir)
    model, objectives = build_model(plan, city, config, cache, rt, quiet)

    settings = TrainSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup=config.warmup,
        weight_decay=config.weight_decay,
        seed=config.seed,
        max_steps_per_epoch=config.max_steps_per_epoch,
        quiet=quiet,
        earlier_lr=config.earlier_lr,
        min_steps=config.min_steps,
    )
    baselines = out / BASELINE_FILE
    if rt.is_main and not (resume and baselines.is_file()):
        # what the model was given and its state before any step: eval's `raw`/`untrained`
        raw_poi, raw_region = raw_features(model, city)
        init_poi, _, init_region = export_embeddings(model, objectives, city, rt.device)
        write_baselines(
            baselines,
            {
                "raw_poi": raw_poi,
                "raw_region": raw_region,
                "untrained_poi": init_poi,
                "untrained_region": init_region,
            },
        )
        kill_point("baselines")
    trainer = Trainer(model, settings, rt, out)
    history = trainer.fit(objectives, resume=resume)
    round_to_shipped(model)  # the weights model.safetensors holds, so embed reproduces these
    checksums = trainer.replica_checksums()

    poi_np, poi_extra, region_np = export_embeddings(model, objectives, city, rt.device)

    result = RunResult(
        out, out / POI_EMBEDDINGS, None, out / RUN_MANIFEST, poi_np, region_np, model
    )
    if rt.is_main:
        kill_point("export")
        written = write_outputs(out, city, poi_np, poi_extra, region_np)
        result.poi_embeddings, result.region_embeddings = written
        save_model(model, out / MODEL_FILE, {"history": [r.__dict__ for r in history]})
        manifest = {
            "mfm_version": dist_version("urban-mfm"),
            "created": datetime.now().isoformat(timespec="seconds"),
            "config": config.model_dump(mode="json"),
            "city": city_record(city),
            "plugins": [
                {"name": p.name, "version": p.version, "package": p.package} for p in plan.plugins
            ],
            "modalities": {m.name: m.fingerprint() for m in plan.modalities},
            "backbones": {m.name: b for m in plan.modalities if (b := m.backbone()) is not None},
            "plan": [
                {
                    "objective": e.objective,
                    "scale": e.scale.label,
                    "plugin": e.plugin,
                    "skipped": e.skip,
                    "note": e.note,
                }
                for e in plan.entries
            ],
            "stages": [r.__dict__ for r in history],
            "objective_stats": {o.name: o.stats() for o in objectives if o.stats()},
            "device": {
                "type": rt.device.type,
                "world_size": rt.world,
                "replica_checksums": checksums,
                "name": torch.cuda.get_device_name(rt.device)
                if rt.device.type == "cuda"
                else platform.processor() or "cpu",
            },
            "feature_cache": {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses},
            "outputs": outputs_record(poi_np, region_np) | {"model": MODEL_FILE},
            "wall_seconds": round(time.perf_counter() - t_start, 2),
        }
        kill_point("manifest")
        write_json(result.manifest, RunManifest.model_validate(manifest).model_dump(mode="json"))
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # model.safetensors stays
        files = [str(p) for p in (*written, result.manifest) if p is not None]
        console.print(f"[green]wrote[/] {', '.join(files)}")
        console.print(f"next: mfm eval {out} && mfm report {out}", highlight=False)
    rt.barrier()
    return result


def build_model(
    plan: RunPlan, city: City, config: RunConfig, cache: FeatureCache, rt: Runtime, quiet: bool
) -> tuple[UrbanModel, list[Objective]]:
    """Prepare the planned modalities (features through ``cache``) and objectives on
    ``city`` with the run's seed, and compose them into the (initial) model."""
    ctx = Context(
        city,
        config,
        cache,
        rt.device,
        config.dim,
        quiet=quiet,
        rank=rt.rank,
        scene_encoders=plan.scene_encoders,
    )
    for first in (True, False):  # rank 0 fills the feature cache, the others read it
        if first == rt.is_main:
            torch.manual_seed(config.seed)
            for mod in plan.modalities:
                mod.prepare(ctx)
        rt.barrier()
    objectives = plan.runnable
    model = UrbanModel(plan.modalities, objectives, config.dim)
    torch.manual_seed(config.seed)
    for obj in objectives:
        obj.prepare(ctx)
        if config.contrast_head:
            obj.contrast_head = ContrastHead(config.dim)
    return model.to(rt.device), objectives


def write_outputs(
    out: Path,
    city: City,
    poi: np.ndarray,
    poi_extra: dict[str, np.ndarray],
    region: np.ndarray | None,
) -> tuple[Path, Path | None]:
    """Write the POI (where the city has POIs) and region embeddings GeoParquet files."""
    poi_path = None
    if city.has("pois"):
        poi_path = write_embeddings(
            out / POI_EMBEDDINGS, city.pois[[POI_ID, "geometry"]], poi, poi_extra
        )
    if region is None:
        return poi_path, None
    regions = city.regions[[REGION_ID, "geometry"]].copy()
    owner = city.poi_region()
    regions["n_pois"] = np.bincount(owner[owner >= 0], minlength=len(regions))
    return poi_path, write_embeddings(out / REGION_EMBEDDINGS, regions, region)


def city_record(city: City) -> dict[str, object]:
    """The manifest's ``city``: name, absolute root, CRS and layer hashes."""
    return {
        "name": city.name,
        "root": str(Path(city.root).resolve()),
        "crs": city.crs,
        "hashes": {layer: city.fingerprint(layer) for layer in LAYERS if city.has(layer)},
    }


def outputs_record(poi: np.ndarray, region: np.ndarray | None) -> dict[str, object]:
    """The manifest's ``outputs``: file names and widths."""
    return {
        "poi_embeddings": POI_EMBEDDINGS if len(poi) else None,
        "region_embeddings": REGION_EMBEDDINGS if region is not None else None,
        "dim": int(poi.shape[1]),
        "region_dim": int(region.shape[1]) if region is not None else None,
        "baselines": BASELINE_FILE,
    }
