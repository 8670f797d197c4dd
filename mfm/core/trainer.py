"""Stage-wise training: one stage per objective in slot order (paper V-A4), resumable.

Distributed training uses torch.distributed under ``torchrun`` (DistributedDataParallel,
gloo on CPU, nccl on CUDA): the same ``mfm run`` uses every process it is launched with.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from mfm.core.atomic import atomic_path, write_text
from mfm.core.errors import MfmError
from mfm.core.killpoints import kill_point
from mfm.core.modality import is_frozen
from mfm.core.model import UrbanModel
from mfm.core.objective import Objective
from mfm.core.progress import log, progress_bar
from mfm.core.weights import MODEL_FILE, read_model

CHECKPOINTS = "checkpoints"
LAST = "last"


@dataclass
class Runtime:
    """Where and how this process trains."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a clear error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise MfmError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def init_runtime(device: str) -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank, world)


@dataclass
class StageRecord:
    """What one stage did, for the manifest."""

    name: str
    scale: str
    epochs: int = 0
    steps: int = 0
    items: int = 0
    losses: list[float] = field(default_factory=list)  # per step
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    health: dict[str, dict[str, float]] = field(default_factory=dict)
    """After this stage, every objective's loss on its fixed batch: ``{name: {"loss",
    "chance", "batch"}}``, ``chance`` = log of the candidates per anchor (InfoNCE at chance)."""


NEAR_CHANCE = 0.95
"""A health loss at or above this share of its chance level counts as back near chance."""


@dataclass
class TrainSettings:
    """The knobs the trainer needs (from RunConfig)."""

    epochs: int
    batch_size: int
    lr: float
    warmup: float
    weight_decay: float
    seed: int
    max_steps_per_epoch: int | None = None
    quiet: bool = False
    earlier_lr: float = 1.0  # lr factor of parameters that an earlier stage trained
    min_steps: int = 0  # a stage with fewer steps over ``epochs`` gets more epochs


def _lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up then linear decay to zero (paper V-A4)."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def _seed(*parts: int) -> int:
    value = 0
    for p in parts:
        value = (value * 1_000_003 + p) % (2**62)
    return value


class Trainer:
    """Runs the stages of one model, saving a checkpoint after every epoch."""

    def __init__(
        self, model: UrbanModel, settings: TrainSettings, runtime: Runtime, out: Path
    ) -> None:
        self.model, self.s, self.rt = model, settings, runtime
        self.out = out
        self.ckpt = out / CHECKPOINTS
        self.history: list[StageRecord] = []
        self.objectives: list[Objective] = []

    # -- batching ---------------------------------------------------------------------
    def _batches(self, n: int, rng: torch.Generator) -> list[torch.Tensor]:
        perm = torch.randperm(n, generator=rng)
        per_rank = n // self.rt.world
        shard = perm[: per_rank * self.rt.world][self.rt.rank :: self.rt.world]
        bs = min(self.s.batch_size, len(shard))
        batches = [shard[i : i + bs] for i in range(0, len(shard), bs)]
        batches = [b for b in batches if len(b) >= 2]
        if self.s.max_steps_per_epoch is not None:
            batches = batches[: self.s.max_steps_per_epoch]
        return batches

    def _steps_per_epoch(self, n: int) -> int:
        return len(self._batches(n, torch.Generator().manual_seed(0)))

    def stage_epochs(self, steps: int) -> int:
        """Epochs of a stage of ``steps`` batches an epoch: ``epochs``, or enough for
        ``min_steps`` optimizer steps (a few hundred regions make ~2 batches an epoch)."""
        return max(self.s.epochs, math.ceil(self.s.min_steps / max(1, steps)))

    # -- stages -----------------------------------------------------------------------
    def fit(self, objectives: list[Objective], resume: bool = False) -> list[StageRecord]:
        """Train each objective for ``epochs`` in order; continue a saved run on ``resume``."""
        self.objectives = list(objectives)
        state = self._load_last() if resume else None
        done_stages = state["stage_index"] if state else 0
        if state:
            self.history = [StageRecord(**r) for r in state["history"]]
        for i, obj in enumerate(objectives):
            if i < done_stages:
                continue
            start_epoch = 0
            if state and state["stage_index"] == i and state["epoch"] > 0:
                start_epoch = state["epoch"]
            self._stage(i, obj, start_epoch, state if start_epoch else None)
            state = None
        self._warn_forgotten()
        return self.history

    # -- health -----------------------------------------------------------------------
    @torch.no_grad()
    def health(self) -> dict[str, dict[str, float]]:
        """Every objective's loss now, on a fixed batch of its items with a fixed seed, so
        that two stages' values differ only by the weights. The global RNG is untouched."""
        out: dict[str, dict[str, float]] = {}
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(
            devices=[self.rt.device] if self.rt.device.type == "cuda" else []
        ):
            for i, obj in enumerate(self.objectives):
                n = obj.num_items()
                if n < 2:
                    continue
                fixed = torch.Generator().manual_seed(_seed(self.s.seed, i, 7919))
                idx = torch.randperm(n, generator=fixed)[: min(n, self.s.batch_size)]
                torch.manual_seed(_seed(self.s.seed, i, 104729))
                rng = torch.Generator().manual_seed(_seed(self.s.seed, i, 104729))
                loss = float(self.model(obj.name, idx, rng))
                out[obj.name] = {
                    "loss": round(loss, 4),
                    "chance": round(math.log(obj.candidates(len(idx))), 4),
                    "batch": len(idx),
                }
        self.model.train(was_training)
        return out

    def _warn_forgotten(self) -> None:
        """Log each earlier objective that the last stage left back near chance."""
        if not self.history or not self.rt.is_main:
            return
        last = self.history[-1]
        own = {r.name: r.health.get(r.name) for r in self.history}  # after its own stage
        for name, h in last.health.items():
            learned = own.get(name)
            if learned is None or learned["loss"] >= NEAR_CHANCE * learned["chance"]:
                continue  # it never left chance: nothing was forgotten
            if name != last.name and h["loss"] >= NEAR_CHANCE * h["chance"]:
                log(
                    f"warning: after the last stage ({last.name}), objective {name} is back "
                    f"near chance (loss {h['loss']:.3f}, chance {h['chance']:.3f})"
                )

    def _stage(self, index: int, obj: Objective, start_epoch: int, state: dict | None) -> None:
        model = self.model
        trainable = {id(p) for m in obj.stage_modules() for p in m.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable and not is_frozen(p))
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise MfmError(f"objective {obj.name!r} has nothing to train; check its plugin")
        # what an earlier stage trained learns on at earlier_lr, so it is not overwritten
        earlier = {
            id(p)
            for o in self.objectives[:index]
            for m in o.stage_modules()
            for p in m.parameters()
        }
        groups = [
            {"params": [p for p in params if id(p) not in earlier], "scale": 1.0},
            {"params": [p for p in params if id(p) in earlier], "scale": self.s.earlier_lr},
        ]
        groups = [g for g in groups if g["params"]]
        net: nn.Module = model
        if self.rt.distributed:
            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=True
            )
        opt = torch.optim.AdamW(groups, lr=self.s.lr, weight_decay=self.s.weight_decay)
        record = StageRecord(obj.name, obj.scale.label)
        if state is not None:
            self._load_optimizer(opt, state)
            record = self.history.pop()
        n = obj.num_items()
        steps = self._steps_per_epoch(n)
        epochs = self.stage_epochs(steps)
        total = steps * epochs
        use_amp = self.rt.device.type == "cuda"
        label = f"stage {index + 1} {obj.scale.label}/{obj.name}"
        t0 = time.perf_counter() - record.seconds
        for epoch in range(start_epoch, epochs):
            rng = torch.Generator().manual_seed(_seed(self.s.seed, index, epoch))
            torch.manual_seed(_seed(self.s.seed, index, epoch, 1))
            batches = self._batches(n, rng)
            epoch_losses = []
            model.train()
            with progress_bar(
                f"{label} epoch {epoch + 1}/{epochs}",
                sum(map(len, batches)),
                self.s.quiet or not self.rt.is_main,
            ) as bar:
                for b, idx in enumerate(batches):
                    factor = _lr_factor(epoch * steps + b, total, self.s.warmup)
                    for group in opt.param_groups:
                        group["lr"] = self.s.lr * factor * group["scale"]
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                        loss = net(obj.name, idx, rng)
                    if not torch.isfinite(loss):
                        raise MfmError(f"{label}: loss became {loss.item()}; lower --lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    kill_point("step")
                    value = float(loss.detach())
                    epoch_losses.append(value)
                    record.items += len(idx) * self.rt.world
                    bar.advance(len(idx), loss=f"loss {value:.4f}")
            record.losses.extend(epoch_losses)
            record.steps += len(epoch_losses)
            record.epochs = epoch + 1
            mean = sum(epoch_losses) / max(1, len(epoch_losses))
            record.epoch_losses.append(mean)
            record.seconds = time.perf_counter() - t0
            if self.s.quiet and self.rt.is_main:
                log(f"{label} epoch {epoch + 1}/{epochs}: loss {mean:.4f}")
            last_epoch = epoch + 1 == epochs
            if last_epoch:
                record.health = self.health()
            self.history.append(record)
            self._save(index + int(last_epoch), 0 if last_epoch else epoch + 1, opt, obj.name)
            kill_point("epoch")
            if not last_epoch:
                self.history.pop()
        model.eval()
        if not math.isfinite(record.seconds):
            record.seconds = 0.0

    def replica_checksums(self) -> list[float]:
        """Sum of |w| of every rank's weights: equal on all ranks when DDP kept them in sync."""
        local = float(sum(p.detach().double().abs().sum() for p in self.model.parameters()))
        if not self.rt.distributed:
            return [local]
        gathered: list[float] = [0.0] * self.rt.world
        dist.all_gather_object(gathered, local)
        return gathered

    # -- checkpoints ------------------------------------------------------------------
    def _save(self, stage_index: int, epoch: int, opt: torch.optim.Optimizer, name: str) -> None:
        """Write weights (+ the optimizer mid-stage: a new stage starts a fresh one) as
        safetensors and the state as JSON, atomically, rank 0 only."""
        if self.rt.is_main:
            self.ckpt.mkdir(parents=True, exist_ok=True)
            tensors = {
                f"model/{k}": v.detach().cpu().contiguous()
                for k, v in self.model.state_dict().items()
            }
            opt_state = opt.state_dict()
            if epoch > 0:  # mid-stage: the next epoch continues this optimizer
                for pid, st in opt_state["state"].items():
                    for k, v in st.items():
                        tensors[f"optim/{pid}/{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
            meta = {
                "stage_index": stage_index,
                "epoch": epoch,
                "stage": name,
                "param_groups": [
                    {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
                    for g in opt_state["param_groups"]
                ],
                "history": [r.__dict__ for r in self.history],
            }
            stems = [LAST] + ([f"stage{stage_index}-{name}"] if epoch == 0 else [])
            for stem in stems:
                _atomic_save(tensors, meta, self.ckpt / stem)
        self.rt.barrier()

    def _load_last(self) -> dict | None:
        path = self.ckpt / f"{LAST}.json"
        if not path.exists() and (self.out / MODEL_FILE).is_file():  # a finished run
            weights, meta = read_model(self.out / MODEL_FILE, self.rt.device)
            self.model.load_state_dict(weights)
            return {"stage_index": len(self.objectives), "epoch": 0} | meta
        if not path.exists():
            if self.rt.is_main:
                log(f"--resume: no checkpoint in {self.ckpt}; starting from the beginning")
            return None
        meta = json.loads(path.read_text())
        tensors = load_file(self.ckpt / meta["weights"], device=str(self.rt.device))
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        self.model.load_state_dict(weights)
        meta["_tensors"] = tensors
        if self.rt.is_main:
            log(f"resuming after stage {meta['stage_index']} epoch {meta['epoch']}")
        return meta

    def _load_optimizer(self, opt: torch.optim.Optimizer, meta: dict) -> None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in meta["_tensors"].items():
            if key.startswith("optim/"):
                _, pid, name = key.split("/", 2)
                state.setdefault(int(pid), {})[name] = value
        for st in state.values():
            if "step" in st:
                st["step"] = st["step"].cpu()
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _atomic_save(tensors: dict[str, torch.Tensor], meta: dict, stem: Path) -> None:
    """Weights under a fresh name first, then the JSON that points at them (atomic rename).

    A kill at any moment leaves a JSON that names a complete weights file.
    """
    weights = stem.parent / f"{stem.name}-s{meta['stage_index']}-e{meta['epoch']}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(tensors, tmp)
    kill_point("checkpoint")  # the weights are there, the JSON does not point at them yet
    info = stem.with_suffix(".json")
    old = json.loads(info.read_text()).get("weights") if info.exists() else None
    write_text(info, json.dumps(meta | {"weights": weights.name}, indent=1))
    if old and old != weights.name:
        (stem.parent / old).unlink(missing_ok=True)
