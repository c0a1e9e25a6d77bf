"""The training loop on a toy regression: resume = uninterrupted run, DDP ranks agree,
checkpoints are atomic and load without unpickling."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_torchrun
from sar3d_core import training
from sar3d_core.training import (EpochSampler, TrainConfig, check_config, find_checkpoint, load_checkpoint,
                                 step_generator, train)

TESTS = Path(__file__).resolve().parent


def toy_dataset(n: int = 64):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)
    return torch.utils.data.TensorDataset(x, y[:, None])


def toy_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))


def toy_loss(model, batch, step):
    """MSE on inputs with noise from the step generator (and the model's own nn.Dropout):
    both RNGs must be replayed for a resumed run to match."""
    x, y = batch
    x = x + 0.3 * torch.randn(x.shape, generator=step_generator(step))
    mse = torch.nn.functional.mse_loss(model(x), y)
    return {"loss": mse, "x_mean": x.mean()}


def config(out_dir, **kw):
    return TrainConfig(**{"steps": 20, "batch_size": 8, "lr": 5e-2, "weight_decay": 0.01, "grad_clip": 1.0,
                          "log_every": 1, "ckpt_every": 6, "seed": 7, "out_dir": str(out_dir), **kw})


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Run A: 20 steps (2.5 epochs of 8 batches) in one go."""
    model = toy_model()
    rows = train(model, toy_dataset(), toy_loss, config(tmp_path_factory.mktemp("a")))
    return rows, weights(model)


def test_run_writes_log_plot_config_and_checkpoint(uninterrupted, tmp_path, capsys):
    rows, _ = uninterrupted
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert sum(r["loss"] for r in rows[-5:]) < sum(r["loss"] for r in rows[:5])  # it learns
    assert {"loss", "x_mean", "grad_norm", "lr", "epoch"} <= rows[0].keys()
    assert rows[8]["epoch"] == 1 and rows[7]["epoch"] == 0  # 64 items / 8 = 8 batches per epoch
    model = toy_model()
    train(model, toy_dataset(), toy_loss, config(tmp_path, steps=4, ckpt_every=0))
    printed = capsys.readouterr().out
    assert printed.startswith("TrainConfig ") and '"device": "cpu"' in printed
    assert [r["step"] for r in training.read_log(tmp_path / "log.jsonl")] == [1, 2, 3, 4]
    assert (tmp_path / "loss.png").stat().st_size > 0
    saved = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert saved["seed"] == 7 and saved["device"] == "cpu" and saved["world_size"] == 1
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text()) == {
        "step": 4, "epoch": 0, "position": 4, "world_size": 1}


class Killed(Exception):
    pass


def loss_killed_at(kill_step):
    def loss(model, batch, step):
        if step == kill_step:
            raise Killed
        return toy_loss(model, batch, step)
    return loss


@pytest.mark.parametrize("kill", ["exception at step 10", "stop after step 12"])
def test_resume_matches_uninterrupted_run(uninterrupted, tmp_path, kill):
    rows_a, weights_a = uninterrupted
    model = toy_model()
    if kill.startswith("exception"):  # dies mid-epoch after the step-6 checkpoint, with rows 7..9 logged
        with pytest.raises(Killed):
            train(model, toy_dataset(), loss_killed_at(10), config(tmp_path))
        assert len(training.read_log(tmp_path / "log.jsonl")) == 9
        resumed_from = 6
    else:  # a run of 12 steps, then asked for 20: crosses the epoch boundary at step 8 and 16
        train(model, toy_dataset(), toy_loss, config(tmp_path, steps=12))
        resumed_from = 12
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == resumed_from
    model = toy_model()  # a fresh process would start from fresh weights
    rows_b = train(model, toy_dataset(), toy_loss, config(tmp_path), resume=True)
    assert rows_b == rows_a  # bit-identical floats (JSON round-trips Python floats exactly)
    assert training.read_log(tmp_path / "log.jsonl") == rows_a
    assert_same_weights(weights(model), weights_a)


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_training import toy_model, toy_dataset, toy_loss, config
from sar3d_core.training import train
def slow_loss(model, batch, step):
    time.sleep(0.05 if step <= 6 else 0.5)  # plenty of time to kill it after the first checkpoint
    return toy_loss(model, batch, step)
train(toy_model(), toy_dataset(), slow_loss, config({out!r}, steps=10_000))
"""


def test_resume_after_sigkill_in_a_subprocess(uninterrupted, tmp_path):
    rows_a, weights_a = uninterrupted
    out = tmp_path / "run"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=str(TESTS), out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while find_checkpoint(out) is None or json.loads((find_checkpoint(out) / "state.json").read_text())["step"] < 6:
            assert proc.poll() is None and time.time() < deadline, "the training subprocess did not checkpoint"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = json.loads((find_checkpoint(out) / "state.json").read_text())["step"]
    assert step in (6, 12, 18)
    model = toy_model()
    rows_b = train(model, toy_dataset(), toy_loss, config(out), resume=True)
    assert rows_b == rows_a
    assert_same_weights(weights(model), weights_a)


def test_failed_save_keeps_previous_checkpoint(uninterrupted, tmp_path, monkeypatch):
    write = training._write_checkpoint_files

    def dies_halfway(folder, model, optimizer, state, config):
        if state["step"] == 12:
            torch.save(optimizer.state_dict(), folder / "optimizer.pt")
            (folder / "model.safetensors").write_bytes(b"half a file")
            raise OSError("disk full")
        write(folder, model, optimizer, state, config)

    monkeypatch.setattr(training, "_write_checkpoint_files", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        train(toy_model(), toy_dataset(), toy_loss, config(tmp_path))
    folder = find_checkpoint(tmp_path)
    assert folder == tmp_path / "checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "log.jsonl", "loss.png"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "optimizer.pt", "state.json"]
    optim_state = torch.load(folder / "optimizer.pt", weights_only=True)  # plain tensors and containers only
    assert optim_state["state"][0]["exp_avg"].shape == (16, 4)
    assert load_checkpoint(folder, toy_model())["step"] == 6

    monkeypatch.setattr(training, "_write_checkpoint_files", write)
    model = toy_model()
    rows = train(model, toy_dataset(), toy_loss, config(tmp_path), resume=True)
    assert rows == uninterrupted[0]
    assert_same_weights(weights(model), uninterrupted[1])


def test_kill_between_renames_falls_back_to_previous_checkpoint(tmp_path):
    train(toy_model(), toy_dataset(), toy_loss, config(tmp_path, steps=6))
    os.replace(tmp_path / "checkpoint", tmp_path / ".checkpoint.old")  # the moment between the renames
    assert find_checkpoint(tmp_path) == tmp_path / ".checkpoint.old"
    rows = train(toy_model(), toy_dataset(), toy_loss, config(tmp_path, steps=8), resume=True)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint"
    assert not (tmp_path / ".checkpoint.old").exists()


def test_sampler_splits_a_seeded_permutation_like_distributed_sampler():
    full = EpochSampler(10, seed=3, epoch=2).indices
    assert sorted(full) == list(range(10)) and full == EpochSampler(10, seed=3, epoch=2).indices
    assert full != EpochSampler(10, seed=3, epoch=3).indices
    ranks = [EpochSampler(10, seed=3, epoch=2, rank=r, world_size=4).indices for r in range(4)]
    assert [len(r) for r in ranks] == [3, 3, 3, 3]  # padded to 12 with the permutation's head
    assert sorted(sum(ranks, [])) == sorted(full + full[:2])
    assert EpochSampler(10, 3, 2, rank=1, world_size=4, start=1).indices == ranks[1][1:]
    a, b = step_generator(5, seed=1, rank=0), step_generator(5, seed=1, rank=0)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    assert not torch.equal(torch.rand(3, generator=step_generator(5, seed=1, rank=1)),
                           torch.rand(3, generator=step_generator(5, seed=1, rank=0)))


DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from safetensors.torch import save_file
from test_training import toy_model, toy_dataset, toy_loss, config
from sar3d_core.training import train, world_info
model = toy_model()
rows = train(model, toy_dataset(), toy_loss, config({out!r}, steps=6, batch_size=4, ckpt_every=3))
rank, world_size, _ = world_info()
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {out!r} + f"/rank{{rank}}_of_{{world_size}}.safetensors")
"""


def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS), out=str(out)))
    result = run_torchrun(script, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(out / f"rank{r}_of_2.safetensors") for r in (0, 1))
    assert_same_weights(rank0, rank1)
    assert not torch.equal(rank0["0.weight"], toy_model().state_dict()["0.weight"])  # it did train
    assert [r["step"] for r in training.read_log(out / "log.jsonl")] == list(range(1, 7))  # rank 0 wrote once
    assert json.loads((out / "checkpoint" / "state.json").read_text()) == {
        "step": 6, "epoch": 0, "position": 6, "world_size": 2}  # 32 items per rank / 4 = 8 batches per epoch
    assert_same_weights(load_file(out / "checkpoint" / "model.safetensors"), rank0)


def test_linear_lr_decay_is_a_function_of_the_step_and_resumes(tmp_path):
    cfg = TrainConfig(steps=10, lr=1.0, lr_decay_from=0.5, lr_final=0.1)
    assert [round(cfg.lr_at(s), 6) for s in (1, 5, 6, 8, 10)] == [1.0, 1.0, 0.82, 0.46, 0.1]
    assert TrainConfig(steps=10, lr=0.3).lr_at(10) == 0.3  # the defaults keep it constant
    kw = dict(steps=10, log_every=1, lr_decay_from=0.5, lr_final=0.1)
    rows = train(toy_model(), toy_dataset(), toy_loss, config(tmp_path / "a", **kw))
    lr0 = config(tmp_path / "a", **kw).lr
    assert [r["lr"] for r in rows] == pytest.approx([config(tmp_path, **kw).lr_at(r["step"]) for r in rows])
    assert rows[-1]["lr"] == pytest.approx(0.1 * lr0)
    # killed at step 6 and resumed: the same schedule, the same weights
    with pytest.raises(Killed):
        train(toy_model(), toy_dataset(), loss_killed_at(7), config(tmp_path / "b", **{**kw, "ckpt_every": 3}))
    model_b = toy_model()
    rows_b = train(model_b, toy_dataset(), toy_loss, config(tmp_path / "b", **{**kw, "ckpt_every": 3}), resume=True)
    model_a = toy_model()
    train(model_a, toy_dataset(), toy_loss, config(tmp_path / "c", **{**kw, "ckpt_every": 3}))
    assert_same_weights(weights(model_a), weights(model_b))
    assert rows_b[-1]["lr"] == pytest.approx(rows[-1]["lr"])


def test_loss_fn_gets_a_step_that_carries_the_seed_and_rank(tmp_path):
    seen = []

    def loss(model, batch, step):
        seen.append((type(step), int(step), step.seed, step.rank, torch.rand(2, generator=step_generator(step))))
        return toy_loss(model, batch, step)

    train(toy_model(), toy_dataset(), loss, config(tmp_path, steps=3))
    assert [s[:4] for s in seen] == [(training.Step, i, 7, 0) for i in (1, 2, 3)]
    for _, i, _, _, drawn in seen:  # the same numbers as asking for seed 7, rank 0 by hand
        assert torch.equal(drawn, torch.rand(2, generator=step_generator(i, seed=7, rank=0)))
    # nothing of the run is left behind: a plain int means seed 0, rank 0, whatever ran before
    assert torch.equal(torch.rand(2, generator=step_generator(2)), torch.rand(2, generator=step_generator(2, 0, 0)))
    step = training.Step(4, seed=7, rank=1)
    assert step == 4 and type(step + 1) is int and json.dumps({"step": step}) == '{"step": 4}'
    assert not torch.equal(torch.rand(2, generator=step_generator(step)),
                           torch.rand(2, generator=step_generator(step, rank=0)))  # an explicit rank wins


def test_warmup_then_linear_decay(tmp_path):
    cfg = TrainConfig(steps=10, lr=1.0, warmup=0.2, lr_decay_from=0.2, lr_final=0.0)
    assert [cfg.lr_at(s) for s in (1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 0.5, 0.0])
    assert TrainConfig(steps=10, lr=0.3, warmup=0.3).lr_at(2) == pytest.approx(0.2)  # ceil(3) warm-up steps
    rows = train(toy_model(), toy_dataset(), toy_loss, config(tmp_path, steps=10, warmup=0.2, lr_decay_from=0.2,
                                                               lr_final=0.0))
    assert [r["lr"] for r in rows] == pytest.approx([5e-2 * cfg.lr_at(r["step"]) for r in rows])


class GroupedToy(torch.nn.Module):
    """A linear map whose bias is left out of the weight decay (``optimizer_groups``)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def optimizer_groups(self):
        return [{"params": [self.lin.weight]}, {"params": [self.lin.bias], "weight_decay": 0.0}]

    def forward(self, x):
        return self.lin(x)


def test_optimizer_groups_hook_sets_the_weight_decay_per_group(tmp_path):
    model = GroupedToy()
    before = weights(model)
    zero_grad_loss = lambda net, batch, step: {"loss": 0.0 * net(batch[0]).sum()}  # noqa: E731
    train(model, toy_dataset(), zero_grad_loss, config(tmp_path, steps=3, lr=0.1, weight_decay=0.5))
    # a zero gradient leaves only AdamW's decoupled decay: w <- w (1 - lr wd) per step, the bias untouched
    torch.testing.assert_close(model.lin.weight, before["lin.weight"] * (1 - 0.1 * 0.5) ** 3)
    assert torch.equal(model.lin.bias, before["lin.bias"])
    saved = torch.load(tmp_path / "checkpoint" / "optimizer.pt", weights_only=True)
    assert [g["weight_decay"] for g in saved["param_groups"]] == [0.5, 0.0]


def test_batches_per_epoch_drops_the_last_partial_batch():
    assert training.batches_per_epoch(64, 8) == 8 and training.batches_per_epoch(70, 8) == 8
    assert training.batches_per_epoch(70, 8, world_size=2) == 4  # 35 items per rank
    with pytest.raises(ValueError, match="do not fill one batch of 8"):
        training.batches_per_epoch(7, 8)


def test_one_cycle_schedule_is_torchs_one_cycle_lr():
    """``schedule="one-cycle"`` gives, step by step, the rates of ``torch.optim.lr_scheduler.OneCycleLR``
    (the tiny CLIP's and the feature network's schedule), so resuming can recompute them from the step."""
    cfg = TrainConfig(steps=40, lr=1e-3, warmup=0.15, schedule="one-cycle")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=cfg.warmup)
    torch_rates = []
    for _ in range(cfg.steps):
        torch_rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [cfg.lr_at(s) for s in range(1, cfg.steps + 1)] == pytest.approx(torch_rates, rel=1e-9)
    with pytest.raises(ValueError, match="not 'linear' or 'one-cycle'"):
        check_config(TrainConfig(schedule="cosine"))
    with pytest.raises(ValueError, match="warm-up share"):
        check_config(TrainConfig(steps=40, schedule="one-cycle", warmup=0.0))
    short = TrainConfig(steps=4, lr=1e-3, warmup=0.15, schedule="one-cycle")  # warm-up under one step: decay only
    assert short.lr_at(1) < 1e-3 and short.lr_at(4) == pytest.approx(1e-3 / 25e4)


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_cpu_bf16_runs_the_forward_under_bf16_autocast_and_keeps_float32_weights(tmp_path, cpu_bf16):
    seen = []

    def loss(model, batch, step):
        x, y = batch
        pred = model(x)
        seen.append((torch.is_autocast_enabled("cpu"), pred.dtype))
        return {"loss": ((pred.float() - y) ** 2).mean()}

    model = toy_model()
    train(model, toy_dataset(), loss, config(tmp_path / "run", steps=3, cpu_bf16=cpu_bf16, device="cpu"))
    expected = torch.bfloat16 if cpu_bf16 else torch.float32
    assert seen == [(cpu_bf16, expected)] * 3
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert json.loads((find_checkpoint(tmp_path / "run") / "config.json").read_text())["cpu_bf16"] is cpu_bf16
