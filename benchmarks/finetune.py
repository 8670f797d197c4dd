"""Text-encoder fine-tuning (``[plugin.osm] finetune_layers``) vs the frozen default, L_poi.

    python benchmarks/finetune.py [--size medium] [--max-steps 4] [--quick] [--threads N]
        [--only NAME,NAME]

Every configuration is a real ``mfm run`` (``--plugins osm --scales micro``, 1 epoch of
``--max-steps`` steps, ``device = "cpu"``) in its own child process, so its peak RSS
(``ru_maxrss``) is its own. The children share one feature cache, warmed by a first
untimed child (frozen features and the cached frozen prefix of ``finetune_layers = 3``).
The training stage is wrapped to sample its RSS every 10 ms (``train peak``); each step is
timed at the trainer's ``step`` kill point: ``s/step`` is the median of the steps after the
first (allocator warm-up), ``ms/POI`` divides it by the POIs the text view encoded per step
(a batch of roads touches every POI on them). The whole run also exports the embeddings
of all POIs twice (before and after training; ``maxrss`` includes that).

``before`` replays the code before bounded fine-tuning (monkeypatched in its child): the
whole encoder, dropout everywhere, on the whole batch with every activation kept, padded
to the batch's longest text, the anchors encoded a second time. It ran out of memory at
batch 256 (killed at 24.4 GB after 131 s), so it runs at batch 32, next to the new path at
the same batch. Writes ``benchmarks/results/finetune.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
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

# name: (finetune_layers, micro_batch, batch_size, before)
CONFIGS: dict[str, tuple[int, int, int, bool]] = {
    "frozen": (0, 64, 256, False),
    "k6-mb64": (6, 64, 256, False),
    "k6-mb32": (6, 32, 256, False),
    "k6-mb128": (6, 128, 256, False),
    "k3-mb64": (3, 64, 256, False),
    "before-b32": (6, 0, 32, True),
    "k6-mb0-b32": (6, 0, 32, False),
    "k6-mb64-b32": (6, 64, 32, False),
}
FIELDS = ("finetune_layers", "micro_batch", "batch", "before")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=("small", "medium"), default="medium")
    p.add_argument("--max-steps", type=int, default=4, help="steps of the one epoch (4)")
    p.add_argument("--quick", action="store_true", help="2 steps, three configurations")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {list(CONFIGS)}")
    add_threads(p)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--city", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args()


# -- child ------------------------------------------------------------------------------
def _install_before() -> None:
    """The fine-tuning code before bounded memory, patched in (see the module docstring)."""
    import torch
    from torch import nn

    from mfm.core.encoders import pool
    from mfm.core.losses import info_nce
    from mfm.core.modality import PoiView
    from mfm.plugins.osm.finetune import length_mask
    from mfm.plugins.osm.modality import OsmText
    from mfm.plugins.osm.objective import PoiRoadObjective

    def poi_view(self: Any, idx: Any, query: Any = None) -> Any:
        idx = idx.to(self.features.device)
        lengths = self.lengths[idx]
        mask = length_mask(lengths, int(lengths.max()))
        hidden = self.encoder(input_ids=self.input_ids[idx, : mask.shape[1]], attention_mask=mask)
        emb = self.head(pool(hidden.last_hidden_state, mask, self.options.pooling))
        return PoiView(emb, torch.ones(len(idx), dtype=torch.bool, device=emb.device))

    def loss(self: Any, idx: Any, rng: Any) -> Any:
        text = self.encoder
        roads = self.roads[idx]
        start, count = self.ptr[roads], self.ptr[roads + 1] - self.ptr[roads]
        pick = start + (torch.rand(len(roads), generator=rng) * count).long()
        anchor = text.poi_view(self.members[pick]).emb
        seg = torch.repeat_interleave(torch.arange(len(roads)), count)
        offsets = torch.arange(int(count.sum())) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count
        )
        emb = text.poi_view(self.members[torch.repeat_interleave(start, count) + offsets]).emb
        road_mean = torch.zeros(len(roads), emb.shape[1], dtype=emb.dtype)
        road_mean = road_mean.index_add(0, seg, emb) / count[:, None]
        return info_nce(anchor, road_mean, self.options.tau)

    OsmText.poi_view = poi_view  # type: ignore[method-assign]
    OsmText.train = nn.Module.train  # type: ignore[assignment]  # dropout in every layer
    PoiRoadObjective.loss = loss  # type: ignore[method-assign]


def _child(args: argparse.Namespace) -> None:
    import torch

    import mfm.core.trainer as trainer_mod
    from mfm.core.config import RunConfig
    from mfm.core.pipeline import run
    from mfm.plugins.osm.modality import OsmText

    set_threads(args.threads)
    layers, micro, batch, before = CONFIGS.get(args.child, (3, 64, 256, False))
    if before:
        _install_before()
    config = RunConfig(
        city=args.city,
        out=args.out / "run",
        plugins=["osm"],
        scales=["micro"],
        device="cpu",
        epochs=1,
        batch_size=batch,
        max_steps_per_epoch=args.max_steps,
        quiet=True,
        cache_dir=args.cache,
        plugin={"osm": {"finetune_layers": layers, "micro_batch": micro}},
    )
    steps: list[float] = []
    pois: list[int] = []
    training = False
    mark = [0.0]
    kill_point = trainer_mod.kill_point

    def timed_kill_point(name: str) -> None:
        if name == "step":
            now = time.perf_counter()
            steps.append(now - mark[0])
            mark[0] = now
        kill_point(name)

    view = OsmText.poi_view

    def counted(self: Any, idx: Any, query: Any = None) -> Any:
        if training and torch.is_grad_enabled():
            pois.append(len(idx))
        return view(self, idx, query)

    trainer_mod.kill_point = timed_kill_point  # type: ignore[assignment]
    OsmText.poi_view = counted  # type: ignore[method-assign]
    stage = trainer_mod.Trainer._stage
    with MemoryMonitor() as monitor:

        def train_stage(self: Any, *a: Any, **kw: Any) -> Any:
            nonlocal training
            with monitor.phase("train"):
                training, mark[0] = True, time.perf_counter()
                try:
                    return stage(self, *a, **kw)
                finally:
                    training = False

        trainer_mod.Trainer._stage = train_stage  # type: ignore[method-assign]
        t0 = time.perf_counter()
        result = run(config)
        wall = time.perf_counter() - t0
    manifest = json.loads(result.manifest.read_text())
    (phase,) = [p for p in monitor.phases if p.name == "train"]
    payload = {
        "name": args.child,
        "finetune_layers": layers,
        "micro_batch": micro,
        "batch_size": batch,
        "before": before,
        "step_seconds": [round(s, 3) for s in steps],
        "pois_per_step": round(sum(pois) / max(1, len(steps)), 1),
        "losses": manifest["stages"][0]["losses"],
        "stage_seconds": manifest["stages"][0]["seconds"],
        "train_rss_start_mib": round(phase.rss_start_mib, 1),
        "train_rss_peak_mib": round(phase.rss_peak_mib, 1),
        "maxrss_mib": round(maxrss_mib(), 1),
        "run_wall_seconds": round(wall, 2),
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "bench.json").write_text(json.dumps(payload, indent=2))


# -- parent -----------------------------------------------------------------------------
def _spawn(
    name: str, city: Path, cache: Path, out: Path, args: argparse.Namespace, steps: int
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", name, "--city", str(city), "--cache", str(cache)]
    cmd += ["--out", str(out), "--max-steps", str(steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        return {"name": name, "failed": f"exit code {proc.returncode}"}
    return json.loads((out / "bench.json").read_text())


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    steady = r["step_seconds"][1:] or r["step_seconds"]
    s_step = statistics.median(steady)
    return {
        "s_per_step": round(s_step, 3),
        "ms_per_road": round(1000 * s_step / r["batch_size"], 2),
        "ms_per_poi": round(1000 * s_step / max(1.0, r["pois_per_step"]), 3),
    }


def main() -> None:
    args = _args()
    if args.child:
        _child(args)
        return
    names = list(CONFIGS)
    if args.quick:
        args.max_steps, names = 2, ["frozen", "k6-mb64", "before-b32"]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - set(CONFIGS))
        if unknown:
            raise SystemExit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    from mfm.cities.default import default_city

    city = default_city(args.size)
    before = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="mfm-bench-finetune-") as tmp:
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        _spawn("warm-up", city, cache, Path(tmp) / "warm", args, 1)  # frozen features, k3 prefix
        warm_seconds = time.perf_counter() - t0
        for name in names:
            print(f"running {name} ...", flush=True)
            r = _spawn(name, city, cache, Path(tmp) / name, args, args.max_steps)
            if "failed" not in r:
                r.update(_summary(r))
            results.append(r)
    after = machine()
    ok = {r["name"]: r for r in results if "failed" not in r}
    ratios: dict[str, float] = {}
    if "frozen" in ok:
        for name, r in ok.items():
            ratios[f"{name}/frozen s_per_step"] = round(
                r["s_per_step"] / ok["frozen"]["s_per_step"], 2
            )
    if "before-b32" in ok:
        for name in ("k6-mb0-b32", "k6-mb64-b32"):
            if name in ok:
                key = f"before-b32/{name} s_per_step"
                ratios[key] = round(ok["before-b32"]["s_per_step"] / ok[name]["s_per_step"], 2)
    payload = {
        "benchmark": "finetune",
        "size": args.size,
        "max_steps": args.max_steps,
        "city": str(city),
        "warm_up_seconds": round(warm_seconds, 1),
        "machine_before": before,
        "machine_after": after,
        "configs": {n: dict(zip(FIELDS, CONFIGS[n], strict=True)) for n in names},
        "results": results,
        "ratios": ratios,
    }
    path = write_result(result_name("finetune", args.threads), payload)
    rows = [
        [
            r["name"],
            r["batch_size"],
            r["pois_per_step"],
            r["s_per_step"],
            r["ms_per_road"],
            r["ms_per_poi"],
            r["train_rss_peak_mib"],
            r["maxrss_mib"],
        ]
        if "failed" not in r
        else [r["name"], "-", "-", "-", "-", "-", "-", r["failed"]]
        for r in results
    ]
    headers = ["config", "batch", "POIs/step", "s/step", "ms/road", "ms/POI", "train peak MiB"]
    print(f"load avg {before['loadavg']} -> {after['loadavg']}")
    print(table([*headers, "maxrss MiB"], rows))
    for key, value in ratios.items():
        print(f"{key}: {value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
