"""The project's one training loop: seeded, resumable, DDP-ready (DESIGN.md §4, STYLE.md 7).

Every stage of SAR3D (the multi-view VQVAE of Sec. 3.2, the next-scale AR transformer of
Sec. 3.3, the captioner of Sec. 4.3) trains through `train(model, dataset, loss_fn, cfg)`.
The loop knows nothing about the model: ``loss_fn(model, batch, step)`` returns a dict
with a scalar tensor ``"loss"`` and any other scalars to log.

Why it is written this way:

* **Determinism on the CPU.** Nothing depends on an RNG state that is carried from step to
  step. The data order of epoch ``e`` is ``randperm(N)`` drawn from a generator seeded by
  ``(seed, e)``; the global torch RNG (``nn.Dropout``) is reseeded from ``(seed, step, rank)``
  before every step; anything else the loss draws comes from ``step_generator(step)``.
  So a checkpoint only needs ``(step, epoch, position)`` besides weights and optimizer
  state, and resuming replays exactly what an uninterrupted run would have done.
* **Checkpoints** follow the one format of §4: ``out_dir/checkpoint/`` holds
  ``model.safetensors``, ``optimizer.pt`` (tensors and plain containers only, read back with
  ``torch.load(weights_only=True)``), ``config.json`` and ``state.json``. A checkpoint is
  written into a temporary folder and renamed into place, so a kill never leaves half of one.
* **DDP.** Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) the loop joins
  the process group (gloo on CPU, nccl on CUDA), wraps the model in
  ``DistributedDataParallel`` and gives each rank every ``world_size``-th item of the
  seeded permutation (what ``DistributedSampler`` does). Only rank 0 writes files.
  ``loss_fn`` must run the model through its ``forward`` (``model(...)``) for DDP to
  average the gradients; the bare module is ``model.module``.
* **Gradient clipping** covers ``model.clip_parameters()`` when the model has that method
  (the VQVAE objective leaves its discriminator out), else every parameter.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

CHECKPOINT = "checkpoint"
_OLD = ".checkpoint.old"  # the previous checkpoint while the new one is renamed into place
_TMP = ".checkpoint.tmp"


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # per process; the global batch is batch_size * world_size
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    log_every: int = 10
    ckpt_every: int = 500  # also saved at the last step; 0 saves only at the last step
    seed: int = 0
    out_dir: str = "runs/train"
    num_workers: int = 0
    device: str = "auto"  # "auto": cuda if available, else cpu
    bf16: bool = True  # bf16 autocast, used on CUDA only
    betas: tuple = (0.9, 0.95)
    # linear learning-rate decay: constant ``lr`` up to step ``lr_decay_from * steps``, then a straight
    # line to ``lr * lr_final`` at the last step (1.0 and 1.0: constant throughout)
    lr_decay_from: float = 1.0
    lr_final: float = 1.0

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (1-based): a function of the step alone, so resuming
        continues the same schedule."""
        start = self.lr_decay_from * self.steps
        if step <= start or self.steps <= start:
            return self.lr
        frac = min(1.0, (step - start) / (self.steps - start))
        return self.lr * (1.0 + (self.lr_final - 1.0) * frac)


# --------------------------------------------------------------------------- processes
def world_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` of this process; ``(0, 1, 0)`` outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def is_main_process() -> bool:
    return world_info()[0] == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def _init_distributed(device: torch.device) -> bool:
    """Join the torchrun process group if there is one; True when this call created it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


# --------------------------------------------------------------------------- randomness
def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (ints, strings); stable across runs and platforms."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


_ACTIVE = {"seed": 0, "rank": 0}  # the seed and rank of the running `train` call


def step_generator(step: int, seed: int | None = None, rank: int | None = None,
                   device="cpu") -> torch.Generator:
    """The generator for everything ``loss_fn`` draws at ``step`` (noise, masks, dropout of
    the condition): seeded from ``(seed, step, rank)``, the running `train` call's seed and
    rank by default, so a resumed run draws the same numbers."""
    seed = _ACTIVE["seed"] if seed is None else seed
    rank = _ACTIVE["rank"] if rank is None else rank
    return torch.Generator(device=device).manual_seed(derive_seed(seed, "loss", step, rank))


class EpochSampler(Sampler):
    """This rank's items of epoch ``epoch``, from batch ``start_batch`` on.

    The permutation is ``randperm(n)`` seeded by ``(seed, epoch)``, padded to a multiple of
    ``world_size`` by repeating its head, and split as ``perm[rank::world_size]``.
    """

    def __init__(self, n, seed, epoch, rank=0, world_size=1, start=0):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch)))
        per_rank = math.ceil(n / world_size)
        perm = torch.cat([perm, perm[: per_rank * world_size - n]])
        self.indices = perm[rank::world_size].tolist()[start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# --------------------------------------------------------------------------- checkpoints
def _write_checkpoint_files(folder: Path, model, optimizer, state: dict, config: dict) -> None:
    save_model(model, str(folder / "model.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "state.json").write_text(json.dumps(state, indent=2))  # last: marks it complete


def save_checkpoint(out_dir, model, optimizer, state: dict, config: dict) -> Path:
    """Write ``out_dir/checkpoint`` atomically: a temporary folder, then renames."""
    out_dir = Path(out_dir)
    final, old, tmp = out_dir / CHECKPOINT, out_dir / _OLD, out_dir / f"{_TMP}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_checkpoint_files(tmp, model, optimizer, state, config)
        for f in tmp.iterdir():  # on disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)  # a kill between the two renames leaves `old`, found by find_checkpoint
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(out_dir) -> Path | None:
    """The newest complete checkpoint folder under ``out_dir``, or None."""
    for name in (CHECKPOINT, _OLD):
        if (Path(out_dir) / name / "state.json").exists():
            return Path(out_dir) / name
    return None


def load_checkpoint(folder, model, optimizer=None, device="cpu") -> dict:
    """Load weights (and optimizer state) in place; returns ``state.json``. Never unpickles."""
    folder = Path(folder)
    load_model(model, str(folder / "model.safetensors"), device=str(device))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    return json.loads((folder / "state.json").read_text())


# --------------------------------------------------------------------------- logs
def read_log(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(rows, path) -> None:
    """The loss curve (log scale) as a PNG; matplotlib's Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    ax.set(xlabel="step", ylabel="loss", title="training loss")
    if rows and min(r["loss"] for r in rows) > 0:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def _mean_over_ranks(scalars: dict, world_size: int, device) -> dict:
    keys = sorted(scalars)
    values = torch.tensor([float(scalars[k]) for k in keys], dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(values)
        values /= world_size
    return dict(zip(keys, values.tolist()))


# --------------------------------------------------------------------------- the loop
def train(model, dataset, loss_fn, cfg: TrainConfig, resume: bool = False, collate_fn=None) -> list[dict]:
    """Train ``model`` in place; returns every log row of the run (earlier ones too on resume).

    ``loss_fn(model, batch, step)`` -> ``{"loss": scalar tensor, other scalars...}``;
    ``step`` counts from 1. ``resume=True`` continues from ``out_dir/checkpoint`` if one
    exists (and starts afresh otherwise).
    """
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.log_every < 1 or cfg.ckpt_every < 0:
        raise ValueError(f"need steps, batch_size, log_every >= 1 and ckpt_every >= 0, got {cfg}")
    device = resolve_device(cfg.device, world_info()[2])
    started_group = _init_distributed(device)
    rank, world_size, _ = world_info()
    main = rank == 0
    out_dir = Path(cfg.out_dir)
    config = {**dataclasses.asdict(cfg), "device": str(device), "world_size": world_size}
    model_cfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(model_cfg):
        config["model_config"] = dataclasses.asdict(model_cfg)

    per_rank = math.ceil(len(dataset) / world_size)
    batches_per_epoch = per_rank // cfg.batch_size  # drop_last: every step has a full batch
    if batches_per_epoch == 0:
        raise ValueError(f"{len(dataset)} items over {world_size} process(es) do not fill one batch of {cfg.batch_size}")

    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=tuple(cfg.betas))
    step = epoch = position = 0  # position: batches of `epoch` already consumed
    rows = []
    folder = find_checkpoint(out_dir) if resume else None
    if folder is not None:
        state = load_checkpoint(folder, model, optimizer, device)
        if state["world_size"] != world_size:
            raise ValueError(f"checkpoint {folder} was written by {state['world_size']} process(es), "
                             f"this run has {world_size}: the data order would differ")
        step, epoch, position = state["step"], state["epoch"], state["position"]
        rows = [r for r in read_log(out_dir / "log.jsonl") if r["step"] <= step]  # drop rows after the kill
    if world_size > 1:
        dist.barrier()  # every rank has read the log before rank 0 rewrites it
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        print("TrainConfig " + json.dumps(config))
        print(f"resuming from {folder} at step {step}" if folder else "training from scratch")
        (out_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for stale in out_dir.glob(f"{_TMP}-*"):  # left by a kill while saving
            shutil.rmtree(stale, ignore_errors=True)

    net = model
    if world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if device.type == "cuda" and cfg.bf16 else nullcontext())
    _ACTIVE.update(seed=cfg.seed, rank=rank)

    def checkpoint():
        if main:
            state = {"step": step, "epoch": epoch, "position": position, "world_size": world_size}
            save_checkpoint(out_dir, model, optimizer, state, config)
            plot_loss(rows, out_dir / "loss.png")
        if world_size > 1:
            dist.barrier()

    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=not main, desc="train")
    cuda_devices = [device.index] if device.type == "cuda" else []
    log = open(out_dir / "log.jsonl", "a") if main else None
    try:
        with torch.random.fork_rng(devices=cuda_devices):  # the caller's RNG state is left as it was
            while step < cfg.steps:
                sampler = EpochSampler(len(dataset), cfg.seed, epoch, rank, world_size, position * cfg.batch_size)
                loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                                    num_workers=cfg.num_workers, collate_fn=collate_fn,
                                    generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "workers", epoch, position)),
                                    pin_memory=device.type == "cuda")
                for batch in loader:
                    step += 1
                    torch.manual_seed(derive_seed(cfg.seed, "global", step, rank))  # nn.Dropout etc.
                    net.train()
                    with autocast:
                        out = loss_fn(net, _to_device(batch, device), step)
                    optimizer.zero_grad(set_to_none=True)
                    out["loss"].backward()
                    scalars = {k: (v.detach().float().item() if torch.is_tensor(v) else float(v)) for k, v in out.items()}
                    if cfg.grad_clip > 0:
                        clip = model.clip_parameters() if hasattr(model, "clip_parameters") else model.parameters()
                        scalars["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(clip, cfg.grad_clip))
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr_at(step)
                    optimizer.step()
                    row_epoch = epoch
                    position += 1
                    if position == batches_per_epoch:
                        epoch, position = epoch + 1, 0
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        row = {"step": step, "epoch": row_epoch, **_mean_over_ranks(scalars, world_size, device),
                               "lr": optimizer.param_groups[0]["lr"]}
                        rows.append(row)
                        if main:
                            log.write(json.dumps(row) + "\n")
                            log.flush()
                            bar.set_postfix(loss=f"{row['loss']:.4g}")
                    bar.update(1)
                    if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps:
                        checkpoint()
                    if step >= cfg.steps:
                        break
    finally:
        if log is not None:
            log.close()
        bar.close()
        if started_group:
            dist.destroy_process_group()
    return rows
