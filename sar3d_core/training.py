"""The project's one training loop: seeded, resumable, DDP-ready (DESIGN.md §4, STYLE.md 7).

Every stage of SAR3D (the multi-view VQVAE of Sec. 3.2, the next-scale AR transformer of
Sec. 3.3, the captioner of Sec. 4.3) trains through `train(model, dataset, loss_fn, cfg)`.
The loop knows nothing about the model: ``loss_fn(model, batch, step)`` returns a dict
with a scalar tensor ``"loss"`` and any other scalars to log.

Why it is written this way:

* **Determinism on the CPU.** Nothing depends on an RNG state that is carried from step to
  step. The data order of epoch ``e`` is ``randperm(N)`` drawn from a generator seeded by
  ``(seed, e)``; the global torch RNG (``nn.Dropout``) is reseeded from ``(seed, step, rank)``
  before every step; anything else the loss draws comes from ``step_generator(step)``
  (``step`` is a ``Step``, an int that carries the run's seed and the rank: no module state).
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
* **Optimizer.** AdamW with ``cfg.betas`` over ``model.optimizer_groups()`` when the model has
  that method (e.g. no weight decay on gains and biases, as CLIP), else over every parameter;
  the rate of step ``s`` is ``cfg.lr_at(s)`` (constant, or warm-up and linear decay).
  **Gradient clipping** covers ``model.clip_parameters()`` when the model has that method
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
    cpu_bf16: bool = False  # bf16 autocast on the CPU too (pays on CPUs with AMX or AVX512-BF16 kernels)
    betas: tuple = (0.9, 0.95)
    # linear learning-rate decay: constant ``lr`` up to step ``lr_decay_from * steps``, then a straight
    # line to ``lr * lr_final`` at the last step (1.0 and 1.0: constant throughout)
    lr_decay_from: float = 1.0
    lr_final: float = 1.0
    # linear warm-up: the rate rises from lr / w to lr over the first w = ceil(warmup * steps) steps
    # (0: none), as OneCycleLR's or HF's warm-up; combined with the decay above it is a one-cycle shape
    warmup: float = 0.0
    # "linear": the warm-up and decay above; "one-cycle": torch's OneCycleLR (cosine from lr / 25 up to
    # lr over the first ``warmup`` share of the steps, then cosine down to lr / 25e4), as a function of the step
    schedule: str = "linear"

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (1-based): a function of the step alone, so resuming
        continues the same schedule."""
        if self.schedule == "one-cycle":
            return one_cycle_lr(step - 1, self.steps, self.lr, self.warmup)
        warm = math.ceil(self.warmup * self.steps)
        factor = min(1.0, step / warm) if warm > 0 else 1.0
        start = self.lr_decay_from * self.steps
        if step <= start or self.steps <= start:
            return self.lr * factor
        frac = min(1.0, (step - start) / (self.steps - start))
        return self.lr * factor * (1.0 + (self.lr_final - 1.0) * frac)


def one_cycle_lr(i: int, total: int, max_lr: float, pct_start: float, div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> float:
    """The rate ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing, its defaults) gives the
    optimizer step ``i`` (0-based) of ``total``: up from ``max_lr / div_factor`` to ``max_lr`` until step
    ``pct_start * total - 1``, then down to ``max_lr / div_factor / final_div_factor`` at the last step."""
    def cosine(start, end, frac):
        return end + (start - end) / 2.0 * (1.0 + math.cos(math.pi * frac))

    initial = max_lr / div_factor
    peak, last = float(pct_start * total) - 1, total - 1
    if i <= peak:  # (a warm-up shorter than one step has no such step)
        return cosine(initial, max_lr, i / peak)
    return cosine(max_lr, initial / final_div_factor, (i - peak) / (last - peak) if last > peak else 1.0)


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


class Step(int):
    """A step number (from 1) that carries its run's seed and this process's rank: what `train`
    passes to ``loss_fn``, so that ``step_generator(step)`` needs nothing else. Arithmetic on it
    gives plain ints."""

    seed: int
    rank: int

    def __new__(cls, step: int, seed: int = 0, rank: int = 0) -> "Step":
        self = super().__new__(cls, step)
        self.seed, self.rank = int(seed), int(rank)
        return self


def step_generator(step: int, seed: int | None = None, rank: int | None = None,
                   device="cpu") -> torch.Generator:
    """The generator for everything ``loss_fn`` draws at ``step`` (noise, masks, dropout of
    the condition): seeded from ``(seed, step, rank)``, by default the seed and rank that the
    ``Step`` from `train` carries (0 and 0 for a plain int), so a resumed run draws the same numbers."""
    seed = getattr(step, "seed", 0) if seed is None else seed
    rank = getattr(step, "rank", 0) if rank is None else rank
    return torch.Generator(device=device).manual_seed(derive_seed(seed, "loss", int(step), rank))


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
@dataclass
class _Run:
    """What a `train` call fixes at its start."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world_size: int
    config: dict  # the config.json of its checkpoints
    batches_per_epoch: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)


@dataclass
class _Progress:
    """Where a run stands: ``step`` steps done, ``position`` batches of epoch ``epoch`` consumed."""

    step: int = 0
    epoch: int = 0
    position: int = 0

    def finish_batch(self, batches_per_epoch: int) -> None:
        self.step += 1
        self.position += 1
        if self.position == batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0

    def state(self, world_size: int) -> dict:
        return {"step": self.step, "epoch": self.epoch, "position": self.position, "world_size": world_size}


def check_config(cfg: TrainConfig) -> None:
    """ValueError unless ``steps``, ``batch_size``, ``log_every`` >= 1 and ``ckpt_every`` >= 0."""
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.log_every < 1 or cfg.ckpt_every < 0:
        raise ValueError(f"need steps, batch_size, log_every >= 1 and ckpt_every >= 0, got {cfg}")
    if cfg.schedule not in ("linear", "one-cycle"):
        raise ValueError(f"schedule {cfg.schedule!r} is not 'linear' or 'one-cycle'")
    if cfg.schedule == "one-cycle" and not 0 < cfg.warmup < 1:
        raise ValueError(f"a one-cycle schedule needs a warm-up share in (0, 1), got {cfg.warmup}")


def batches_per_epoch(n_items: int, batch_size: int, world_size: int = 1) -> int:
    """Full batches per process and epoch (``drop_last``: every step has a full batch); ValueError if none."""
    batches = math.ceil(n_items / world_size) // batch_size
    if batches == 0:
        raise ValueError(f"{n_items} items over {world_size} process(es) do not fill one batch of {batch_size}")
    return batches


def _checkpoint_config(cfg: TrainConfig, device: torch.device, world_size: int, model) -> dict:
    """``config.json``: the TrainConfig, the device, the world size and the model's dataclass config if any."""
    config = {**dataclasses.asdict(cfg), "device": str(device), "world_size": world_size}
    model_cfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(model_cfg):
        config["model_config"] = dataclasses.asdict(model_cfg)
    return config


def _start_run(model, dataset, cfg: TrainConfig, device: torch.device) -> _Run:
    """The run on ``device`` (after joining the process group): ranks, config.json, batches per epoch."""
    rank, world_size, _ = world_info()
    return _Run(cfg, device, rank, world_size, _checkpoint_config(cfg, device, world_size, model),
                batches_per_epoch(len(dataset), cfg.batch_size, world_size))


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``model.optimizer_groups()`` when the model has that method (parameter groups,
    e.g. no weight decay on gains and biases), else over every parameter with ``cfg.weight_decay``."""
    params = model.optimizer_groups() if hasattr(model, "optimizer_groups") else model.parameters()
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))


def _resume(run: _Run, model, optimizer) -> tuple[_Progress, list, Path | None]:
    """Load the newest checkpoint of ``run.out_dir`` in place; the progress and log rows it reached."""
    folder = find_checkpoint(run.out_dir)
    if folder is None:
        return _Progress(), [], None
    state = load_checkpoint(folder, model, optimizer, run.device)
    if state["world_size"] != run.world_size:
        raise ValueError(f"checkpoint {folder} was written by {state['world_size']} process(es), "
                         f"this run has {run.world_size}: the data order would differ")
    progress = _Progress(state["step"], state["epoch"], state["position"])
    rows = [r for r in read_log(run.out_dir / "log.jsonl") if r["step"] <= progress.step]  # drop rows after the kill
    return progress, rows, folder


def _open_run_folder(run: _Run, rows: list, folder: Path | None, step: int) -> None:
    """Rank 0 prints the config, rewrites ``log.jsonl`` with ``rows`` and removes half-written checkpoints."""
    if run.world_size > 1:
        dist.barrier()  # every rank has read the log before rank 0 rewrites it
    if not run.main:
        return
    run.out_dir.mkdir(parents=True, exist_ok=True)
    print("TrainConfig " + json.dumps(run.config))
    print(f"resuming from {folder} at step {step}" if folder else "training from scratch")
    (run.out_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for stale in run.out_dir.glob(f"{_TMP}-*"):  # left by a kill while saving
        shutil.rmtree(stale, ignore_errors=True)


def _wrap(model, run: _Run):
    """The module ``loss_fn`` runs: ``DistributedDataParallel(model)`` under torchrun, else the model."""
    if run.world_size == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[run.device.index] if run.device.type == "cuda" else None)


def _epoch_loader(dataset, run: _Run, progress: _Progress, collate_fn) -> DataLoader:
    """This rank's batches of ``progress.epoch`` from batch ``progress.position`` on."""
    cfg = run.cfg
    sampler = EpochSampler(len(dataset), cfg.seed, progress.epoch, run.rank, run.world_size,
                           progress.position * cfg.batch_size)
    workers = torch.Generator().manual_seed(derive_seed(cfg.seed, "workers", progress.epoch, progress.position))
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                      num_workers=cfg.num_workers, collate_fn=collate_fn, generator=workers,
                      pin_memory=run.device.type == "cuda")


def _optimizer_step(net, model, optimizer, loss_fn, batch, step: Step, run: _Run) -> dict:
    """One step: reseed the global RNG, forward and backward, clip, set the rate, update. Its scalars."""
    cfg = run.cfg
    torch.manual_seed(derive_seed(cfg.seed, "global", int(step), run.rank))  # nn.Dropout etc.
    net.train()
    autocast = nullcontext()
    if (run.device.type == "cuda" and cfg.bf16) or (run.device.type == "cpu" and cfg.cpu_bf16):
        autocast = torch.autocast(run.device.type, dtype=torch.bfloat16)
    with autocast:
        out = loss_fn(net, _to_device(batch, run.device), step)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    scalars = {k: (v.detach().float().item() if torch.is_tensor(v) else float(v)) for k, v in out.items()}
    if cfg.grad_clip > 0:
        clip = model.clip_parameters() if hasattr(model, "clip_parameters") else model.parameters()
        scalars["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(clip, cfg.grad_clip))
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr_at(int(step))
    optimizer.step()
    return scalars


def _log_row(run: _Run, step: int, epoch: int, scalars: dict, lr: float, log) -> dict:
    """The log row of a step (scalars averaged over the ranks); rank 0 appends it to ``log.jsonl``."""
    row = {"step": step, "epoch": epoch, **_mean_over_ranks(scalars, run.world_size, run.device), "lr": lr}
    if log is not None:
        log.write(json.dumps(row) + "\n")
        log.flush()
    return row


def _save(run: _Run, model, optimizer, progress: _Progress, rows: list) -> None:
    """Rank 0 writes the checkpoint and ``loss.png``; every rank waits for it."""
    if run.main:
        save_checkpoint(run.out_dir, model, optimizer, progress.state(run.world_size), run.config)
        plot_loss(rows, run.out_dir / "loss.png")
    if run.world_size > 1:
        dist.barrier()


def _due(every: int, step: int, last: int) -> bool:
    """Every ``every`` steps (never when 0) and at the last step."""
    return (every > 0 and step % every == 0) or step == last


def _run_steps(run: _Run, model, net, optimizer, dataset, loss_fn, collate_fn, progress: _Progress,
               rows: list) -> None:
    """Steps ``progress.step + 1 .. cfg.steps``: log and checkpoint as they fall due."""
    cfg = run.cfg
    bar = tqdm(total=cfg.steps, initial=min(progress.step, cfg.steps), disable=not run.main, desc="train")
    log = open(run.out_dir / "log.jsonl", "a") if run.main else None
    try:
        while progress.step < cfg.steps:
            for batch in _epoch_loader(dataset, run, progress, collate_fn):
                step, epoch = progress.step + 1, progress.epoch
                scalars = _optimizer_step(net, model, optimizer, loss_fn, batch, Step(step, cfg.seed, run.rank), run)
                progress.finish_batch(run.batches_per_epoch)
                if _due(cfg.log_every, step, cfg.steps):
                    rows.append(_log_row(run, step, epoch, scalars, optimizer.param_groups[0]["lr"], log))
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}")
                bar.update(1)
                if _due(cfg.ckpt_every, step, cfg.steps):
                    _save(run, model, optimizer, progress, rows)
                if step >= cfg.steps:
                    break
    finally:
        if log is not None:
            log.close()
        bar.close()


def objective_loss(net, batch, step) -> dict:
    """The ``loss_fn`` of a model that is its own objective (``net(batch, step)`` returns the dict):
    it runs through ``forward``, so DDP averages the gradients."""
    return net(batch, step)


def train(model, dataset, loss_fn, cfg: TrainConfig, resume: bool = False, collate_fn=None) -> list[dict]:
    """Train ``model`` in place; returns every log row of the run (earlier ones too on resume).

    ``loss_fn(model, batch, step)`` -> ``{"loss": scalar tensor, other scalars...}``;
    ``step`` counts from 1 (a ``Step``: ``step_generator(step)`` draws this step's numbers).
    ``resume=True`` continues from ``out_dir/checkpoint`` if one exists (and starts afresh otherwise).
    """
    check_config(cfg)
    device = resolve_device(cfg.device, world_info()[2])
    started_group = _init_distributed(device)
    try:
        run = _start_run(model, dataset, cfg, device)
        model.to(device)
        optimizer = make_optimizer(model, cfg)
        progress, rows, folder = _resume(run, model, optimizer) if resume else (_Progress(), [], None)
        _open_run_folder(run, rows, folder, progress.step)
        net = _wrap(model, run)
        with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
            _run_steps(run, model, net, optimizer, dataset, loss_fn, collate_fn, progress, rows)  # caller's RNG kept
    finally:
        if started_group:
            dist.destroy_process_group()
    return rows
