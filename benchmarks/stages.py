"""Wall time and peak memory of every stage of a full run, all five plugins, on the CPU.

    python benchmarks/stages.py [--size small|medium] [--quick] [--epochs N]

Runs ``mfm.core.pipeline.run`` on the synthetic city of ``--size`` (medium by default)
with the default config except ``epochs`` (2 by default, to keep the benchmark short) and
``device = "cpu"``, in a child process with a fresh feature cache, so feature extraction
is really measured. Each modality's ``prepare`` (feature extraction + its own graphs),
each objective's ``prepare`` (pair mining, graphs) and each training stage is wrapped
(monkeypatched) to record its wall time and its peak RSS, sampled every 10 ms by a
background thread. A second child then runs only the ``prepare`` calls again on the
same, now warm, cache: the cache-hit time of feature extraction.

Writes ``benchmarks/results/stages.json``. The city itself is generated once (not timed)
into ``$MFM_CACHE/cities`` (``~/.cache/mfm/cities``), as ``mfm run`` does.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MemoryMonitor,
    add_threads,
    machine,
    maxrss_mib,
    result_name,
    set_threads,
    table,
    write_result,
)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=("small", "medium", "large"), default="medium")
    p.add_argument("--quick", action="store_true", help="1 epoch of at most 5 steps per stage")
    p.add_argument("--epochs", type=int, default=2, help="epochs per stage (default 2)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    add_threads(p)
    p.add_argument("--child", choices=("run", "prepare"), help=argparse.SUPPRESS)
    p.add_argument("--city", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


# -- child: the instrumented run --------------------------------------------------------
def _instrument(monitor: MemoryMonitor, registry: Any) -> None:
    """Wrap every modality/objective ``prepare`` and ``Trainer._stage`` in a phase."""
    from mfm.core.trainer import Trainer

    def wrap(kind: str, cls: type, fn: Any) -> Any:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            with monitor.phase(f"{kind}:{self.name}"):
                return fn(self, *args, **kwargs)

        return inner

    for info in registry.plugins.values():
        for cls in info.modalities.values():
            cls.prepare = wrap("prepare", cls, cls.prepare)
        for cls in info.objectives.values():
            cls.prepare = wrap("mine", cls, cls.prepare)
    stage = Trainer._stage

    @functools.wraps(stage)
    def train_stage(self: Any, index: int, obj: Any, *args: Any, **kwargs: Any) -> Any:
        with monitor.phase(f"train:{obj.name}"):
            return stage(self, index, obj, *args, **kwargs)

    Trainer._stage = train_stage  # type: ignore[method-assign]


def _child(args: argparse.Namespace) -> None:
    import torch

    set_threads(args.threads)

    from mfm.core.bundle.city import City
    from mfm.core.cache import FeatureCache
    from mfm.core.config import RunConfig
    from mfm.core.modality import Context
    from mfm.core.model import UrbanModel
    from mfm.core.pipeline import plan_run, run
    from mfm.core.plugins import load_registry

    registry = load_registry()
    config = RunConfig(
        city=args.city,
        out=args.out,
        device=args.device,
        epochs=args.epochs,
        quiet=True,
        cache_dir=args.cache,
        max_steps_per_epoch=args.max_steps,
    )
    payload: dict[str, Any] = {"config": config.model_dump(mode="json")}
    with MemoryMonitor() as monitor:
        _instrument(monitor, registry)
        t0 = time.perf_counter()
        if args.child == "run":
            result = run(config, registry=registry)
            manifest = json.loads(result.manifest.read_text())
            payload["manifest_stages"] = [
                {k: s[k] for k in ("name", "scale", "epochs", "steps", "items", "seconds")}
                for s in manifest["stages"]
            ]
            payload["plan"] = manifest["plan"]
            payload["feature_cache"] = manifest["feature_cache"]
            payload["manifest_wall_seconds"] = manifest["wall_seconds"]
        else:  # the prepare calls only, on the warm cache
            city = City.load(config.city)
            plan = plan_run(config, city, registry)
            cache = FeatureCache(config.cache_dir)
            device = torch.device(
                "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
            )
            ctx = Context(city, config, cache, device, config.dim, quiet=True)
            torch.manual_seed(config.seed)
            for mod in plan.modalities:
                mod.prepare(ctx)
            objs = plan.runnable
            UrbanModel(plan.modalities, objs, config.dim)  # binds the objectives
            for obj in objs:
                obj.prepare(ctx)
            payload["feature_cache"] = {"hits": cache.hits, "misses": cache.misses}
        payload["wall_seconds"] = time.perf_counter() - t0
    payload["maxrss_mib"] = maxrss_mib()
    payload["phases"] = [
        {
            "name": p.name,
            "seconds": p.seconds,
            "rss_start_mib": p.rss_start_mib,
            "rss_peak_mib": p.rss_peak_mib,
            "rss_end_mib": p.rss_end_mib,
            "peak_delta_mib": p.peak_delta_mib,
            "maxrss_mib": p.maxrss_mib,
            "gpu_peak_mib": p.gpu_peak_mib,
        }
        for p in monitor.phases
    ]
    payload["torch_threads"] = torch.get_num_threads()
    (args.out / "bench.json").write_text(json.dumps(payload, indent=2))


# -- parent ----------------------------------------------------------------------------
def _spawn(mode: str, city: Path, cache: Path, out: Path, args: argparse.Namespace) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--city",
        str(city),
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
    ]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"child {mode} failed with exit code {proc.returncode}")
    data = json.loads((out / "bench.json").read_text())
    data["process_seconds"] = time.perf_counter() - t0  # includes imports and start-up
    return data


def main() -> None:
    args = _args()
    if args.child:
        _child(args)
        return
    if args.quick:
        args.epochs, args.max_steps = 1, 5
    from mfm.cities.default import default_city

    before = machine()
    t0 = time.perf_counter()
    city = default_city(args.size)
    gen_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="mfm-bench-stages-") as tmp:
        cache = Path(tmp) / "cache"
        cold = _spawn("run", city, cache, Path(tmp) / "run", args)
        warm = _spawn("prepare", city, cache, Path(tmp) / "warm", args)
    after = machine()

    from mfm.core.bundle.city import City

    c = City.load(city)
    sizes = {
        layer: len(c.layer(layer))
        for layer in ("pois", "roads", "regions", "svi", "satellite", "trajectories")
        if c.has(layer)
    }
    warm_by = {p["name"]: p for p in warm["phases"]}
    manifest_s = {s["name"]: s["seconds"] for s in cold.get("manifest_stages", [])}
    rows = []
    for p in cold["phases"]:
        w = warm_by.get(p["name"])
        train = p["name"].split(":", 1)[1] if p["name"].startswith("train:") else None
        rows.append(
            {
                "phase": p["name"],
                "seconds": round(p["seconds"], 3),
                "manifest_seconds": round(manifest_s[train], 3) if train in manifest_s else None,
                "cached_seconds": round(w["seconds"], 3) if w else None,
                "rss_start_mib": round(p["rss_start_mib"], 1),
                "rss_peak_mib": round(p["rss_peak_mib"], 1),
                "peak_delta_mib": round(p["peak_delta_mib"], 1),
                "maxrss_mib": round(p["maxrss_mib"], 1),
                "gpu_peak_mib": None
                if p.get("gpu_peak_mib") is None
                else round(p["gpu_peak_mib"], 1),
            }
        )
    prep = [r for r in rows if r["phase"].startswith("prepare:")]
    cold_prep = sum(r["seconds"] for r in prep)
    warm_prep = sum(r["cached_seconds"] or 0.0 for r in prep)
    payload = {
        "benchmark": "stages",
        "size": args.size,
        "epochs": args.epochs,
        "max_steps_per_epoch": args.max_steps,
        "torch_threads": cold["torch_threads"],
        "city": str(city),
        "city_layers": sizes,
        "city_generation_seconds_not_measured": round(gen_seconds, 2),
        "machine_before": before,
        "machine_after": after,
        "phases": rows,
        "prepare_seconds_cold": round(cold_prep, 3),
        "prepare_seconds_cached": round(warm_prep, 3),
        "prepare_speedup_cached": round(cold_prep / max(warm_prep, 1e-9), 1),
        "run_wall_seconds": round(cold["wall_seconds"], 2),
        "run_manifest_wall_seconds": cold.get("manifest_wall_seconds"),
        "run_process_seconds": round(cold["process_seconds"], 2),
        "run_maxrss_mib": round(cold["maxrss_mib"], 1),
        "cached_prepare_process_seconds": round(warm["process_seconds"], 2),
        "cached_prepare_maxrss_mib": round(warm["maxrss_mib"], 1),
        "feature_cache_cold": cold.get("feature_cache"),
        "feature_cache_warm": warm.get("feature_cache"),
        "manifest_stages": cold.get("manifest_stages"),
        "plan": cold.get("plan"),
    }
    path = write_result(result_name("stages", args.threads), payload)
    print(
        f"stages on the {args.size} city {sizes}, epochs {args.epochs}"
        + (f", max {args.max_steps} steps/epoch" if args.max_steps else "")
        + f", {cold['torch_threads']} torch thread(s)"
        + f"; load avg {before['loadavg']} -> {after['loadavg']}"
    )
    print(
        table(
            ["phase", "s (cold)", "s (cached)", "peak RSS MiB", "peak - start MiB", "maxrss MiB"],
            [
                [
                    r["phase"],
                    r["seconds"],
                    r["cached_seconds"] if r["cached_seconds"] is not None else "-",
                    r["rss_peak_mib"],
                    r["peak_delta_mib"],
                    r["maxrss_mib"],
                ]
                for r in rows
            ],
        )
    )
    print(
        f"prepare (all modalities): {cold_prep:.2f} s cold, {warm_prep:.2f} s cached "
        f"({payload['prepare_speedup_cached']}x); run wall {payload['run_wall_seconds']} s, "
        f"process peak RSS {payload['run_maxrss_mib']} MiB"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
