"""Several processes: real DDP on CPU (gloo) from the Hydra app; evaluation that scores every window once whatever
the number of processes; the global batch in tokens; the FSDP and SLURM configs.

One multirun of two jobs with two DDP processes each serves the DDP tests: each job runs as a single run
(`python train.py <its overrides> hydra.run.dir=<its dir>`), the path of `python train.py trainer.devices=2`. It
uses the first lines of each WikiText-2 split, so that the final evaluation covers whole splits (where the ranks
need padding) in seconds."""

import csv
import math
import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO, run_train
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DistributedSampler

from gptlab.apps.runtime.distributed import single_run_command
from gptlab.apps.train import build
from gptlab.config.run import accumulation
from gptlab.config.validate import validate
from gptlab.data import IGNORE_INDEX, EvalWindows, PaddedWindows
from gptlab.data.datamodule import WikiText2DataModule
from gptlab.training.budget import TimeBudget
from gptlab.training.module import GPTLitModule, param_groups

pytestmark = pytest.mark.full  # real training processes: the full suite, not the quick tier

LINES = {"train": 600, "valid": 30, "test": 20}
NO_SHA = "data.sha256={wiki.train.tokens:null,wiki.valid.tokens:null,wiki.test.tokens:null}"
RUN = [
    "model=gpt_nano", "model.block_size=32", "data.batch_size=4", "data.eval_batch_size=8", "data.download=false",
    NO_SHA, "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
    "final_limit_batches=1.0", "callbacks.progress_bar=null", "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
]


class RecordTrainWindows(L.Callback):
    """Saves the training inputs this rank saw, one (batch, block) tensor per step, to <out_dir>/rank<r>.pt.
    The DDP runs below load it from this file (tests/training/ and tests/ are put on their PYTHONPATH)."""

    def __init__(self, out_dir):
        self.out_dir, self.batches = Path(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch[0].clone())

    def on_train_end(self, trainer, pl_module):
        torch.save(torch.stack(self.batches), self.out_dir / f"rank{trainer.global_rank}.pt")


class RecordParamsAndLR(L.Callback):
    """Saves this rank's final parameters and the learning rate of every step to <out_dir>/state<r>.pt."""

    def __init__(self, out_dir):
        self.out_dir, self.lrs = Path(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer, pl_module):
        params = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        torch.save({"params": params, "lrs": self.lrs, "step": trainer.global_step},
                   self.out_dir / f"state{trainer.global_rank}.pt")


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory, data_dir) -> Path:
    """A data directory whose wikitext-2/ holds the first lines of each real split."""
    root = tmp_path_factory.mktemp("small-wikitext")
    (root / "wikitext-2").mkdir()
    for split, n in LINES.items():
        text = (data_dir / "wikitext-2" / f"wiki.{split}.tokens").read_text(encoding="utf-8")
        (root / "wikitext-2" / f"wiki.{split}.tokens").write_text("".join(text.splitlines(True)[:n]), "utf-8")
    return root


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory, small_data_dir, token_cache_dir):
    """`python train.py -m ... trainer.accelerator=cpu trainer.devices=2 seed=1,2` (-m as hydra.mode=MULTIRUN, which
    may follow other overrides): two jobs of two DDP processes each; every rank saves the windows it trained on
    into its job dir. Returns (sweep dir, output, base dir)."""
    base = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1]),
                                                    os.environ.get("PYTHONPATH", "")]))
        record = [f"+callbacks.windows._target_={__name__}.RecordTrainWindows",
                  "+callbacks.windows.out_dir=${paths.output_dir}"]
        proc = run_train(base / "single-run-dir", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={base / 'sweep'}", *RUN,
                         f"data.data_dir={small_data_dir}", *record, "seed=1,2", cache_dir=token_cache_dir)
    return base / "sweep", proc.stdout + proc.stderr, base


def metric_rows(run_dir: Path, key: str) -> list[dict]:
    return [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get(key)]


def test_multirun_with_two_ddp_processes_per_job_writes_two_complete_job_dirs(ddp_sweep):
    sweep, out, base = ddp_sweep
    assert out.count("Launching 2 jobs") == 1  # the sweep ran once, not once per rank
    assert sorted(p.name for p in base.iterdir()) == ["sweep"]  # no run dir besides the sweep's
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != "plots") == ["0", "1"]  # + figures
    for job in ("0", "1"):
        run_dir = sweep / job
        assert len(metric_rows(run_dir, "test/ppl")) == 1 and len(metric_rows(run_dir, "val/ppl")) == 2
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert f"seed={int(job) + 1}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert out.count("Starting with 2 processes") == 2
    assert out.count("gptlab summary") == 2  # printed by rank 0 of each job only


def test_ddp_run_writes_one_metrics_file_and_checkpoints_once(ddp_sweep):
    run_dir = ddp_sweep[0] / "0"
    assert [p.relative_to(run_dir) for p in run_dir.rglob("metrics.csv")] == [Path("csv/metrics.csv")]
    assert [p.relative_to(run_dir) for p in run_dir.rglob(".hydra")] == [Path(".hydra")]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(ckpts) == 2 and ckpts[0] == "last.ckpt" and ckpts[1].startswith("step2")  # last and best, once


def test_ddp_ranks_train_on_disjoint_windows(ddp_sweep):
    run_dir = ddp_sweep[0] / "0"
    rank0, rank1 = torch.load(run_dir / "rank0.pt"), torch.load(run_dir / "rank1.pt")
    assert rank0.shape == rank1.shape == (2, 4, 32)  # 2 steps of 4 windows each
    seen0 = {tuple(w.tolist()) for w in rank0.flatten(0, 1)}
    seen1 = {tuple(w.tolist()) for w in rank1.flatten(0, 1)}
    assert len(seen0) == len(seen1) == 8 and not seen0 & seen1


def test_val_ppl_with_two_processes_equals_one_process(ddp_sweep, small_data_dir, token_cache_dir):
    sweep, out, _ = ddp_sweep
    run_dir = sweep / "0"
    final = metric_rows(run_dir, "val/ppl")[-1]  # the final validation of the best checkpoint, on 2 processes
    ckpt = next((run_dir / "checkpoints").glob("step*.ckpt"))
    assert f"checkpoint {ckpt}" in out

    sha = {f"wiki.{s}.tokens": None for s in LINES}
    dm = WikiText2DataModule(data_dir=small_data_dir, cache_dir=token_cache_dir, block_size=32, batch_size=4,
                             eval_batch_size=8, download=False, sha256=sha)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    one = trainer.validate(GPTLitModule.load_from_checkpoint(ckpt), datamodule=dm, verbose=False)[0]
    assert len(dm.val_dataset) % 2 == 1  # an odd number of windows: two ranks need a padding window
    assert float(final["val/tokens"]) == one["val/tokens"] == dm.val_dataset.num_targets  # every target once
    assert math.isclose(float(final["val/ppl"]), one["val/ppl"], rel_tol=1e-5)


class RankClock(L.Callback):
    """The time budget's clock on this rank: a fake one that each training step of rank r advances by r + 1
    seconds, so the ranks disagree on the speed, whatever the machine's own."""

    def __init__(self):
        self.now, self.seconds = 0.0, None

    def clock(self):
        return self.now

    def setup(self, trainer, pl_module, stage):
        budget = next(cb for cb in trainer.callbacks if isinstance(cb, TimeBudget))
        budget.clock, budget.started, self.seconds = self.clock, 0.0, 1.0 + trainer.global_rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.now += self.seconds


def test_a_time_budget_gives_every_rank_rank_0s_plan_and_identical_weights(tmp_path, small_data_dir,
                                                                          token_cache_dir, monkeypatch):
    # Each rank's clock differs: a schedule that followed it would give each replica its own learning rates.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1]),
                                                    os.environ.get("PYTHONPATH", "")]))
    run_train(tmp_path, *RUN, f"data.data_dir={small_data_dir}", "trainer.max_steps=100000",
              "trainer.max_time=00:00:01:00", "trainer.val_check_interval=100000", "callbacks.time_budget.skip_steps=3",
              "callbacks.time_budget.measure_steps=10", "callbacks.time_budget.reserve=0.03",
              "callbacks.resume_checkpoint.every_n_train_steps=null", "callbacks.sample_text=null",
              f"+callbacks.clock._target_={__name__}.RankClock",
              f"+callbacks.record._target_={__name__}.RecordParamsAndLR",
              "+callbacks.record.out_dir=${paths.output_dir}", cache_dir=token_cache_dir)
    rank0, rank1 = torch.load(tmp_path / "state0.pt"), torch.load(tmp_path / "state1.pt")
    budget = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["TimeBudget"]
    # rank 0's clock decides: 60 s less the 3 % reserve at 1 s a step (rank 1's 2 s would give half as many)
    assert rank0["step"] == rank1["step"] == budget["total_steps"] == pytest.approx(60 * 0.97, abs=2)
    assert rank0["lrs"] == rank1["lrs"]
    hparams = OmegaConf.load(tmp_path / "csv" / "hparams.yaml")  # the schedule as it ran, not trainer.max_steps
    assert hparams.scheduler.total_steps == budget["total_steps"]
    config = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    factor = instantiate(config.scheduler)(torch.optim.SGD([torch.zeros(1)], lr=1.0)).lr_lambdas[0]
    factor.total_steps = budget["total_steps"]  # the run's schedule, decayed to its end at the step budget
    lr = config.optimizer.lr  # the default run's optimizer: Muon's lr for the block matrices, the first group
    expected = [lr * factor(s) for s in range(budget["total_steps"])]
    assert rank0["lrs"] == pytest.approx(expected, rel=1e-6)
    assert rank0["params"].keys() == rank1["params"].keys()
    assert all(torch.equal(rank0["params"][n], rank1["params"][n]) for n in rank0["params"])  # bitwise


def test_eval_windows_padded_for_ranks_score_every_target_once():
    windows = EvalWindows(np.arange(1000) % 97, block_size=16, stride=12)
    for ranks in (2, 3, 4):
        padded = PaddedWindows(windows, ranks)
        shares = [list(DistributedSampler(padded, ranks, r, shuffle=False)) for r in range(ranks)]
        assert len({len(s) for s in shares}) == 1  # same number of windows on every rank
        scored = []
        for k in sorted(k for s in shares for k in s):
            x, y = padded[k]
            if k >= len(windows):
                assert (y == IGNORE_INDEX).all()
            scored += [(k * 12 + i, t) for i, t in enumerate(y.tolist()) if t != IGNORE_INDEX]
        assert len(scored) == len(set(scored)) == windows.num_targets


# --- configuration, built in this process


def compose_train(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def test_global_batch_tokens_sets_gradient_accumulation_from_devices(tmp_path):
    common = ["model=gpt_nano", "model.block_size=32", "data.batch_size=4", "trainer.accelerator=cpu",
              "trainer.val_check_interval=5", f"paths.output_dir={tmp_path}", "global_batch_tokens=1024"]
    for devices, accumulate in ((1, 8), (2, 4)):
        _, _, trainer = build(compose_train(*common, f"trainer.devices={devices}"))
        assert trainer.world_size * accumulate * 4 * 32 == 1024
        assert trainer.accumulate_grad_batches == accumulate
        assert trainer.val_check_interval == 5 * accumulate  # still every 5 optimizer steps
    with pytest.raises(ValueError, match=r"multiple of .* 32 × 4 × 2 = 256"):
        build(compose_train(*common, "trainer.devices=2", "global_batch_tokens=1000"))
    with pytest.raises(ValueError, match="not both"):  # a rule of the config, checked before anything is built
        validate(compose_train(*common, "trainer.accumulate_grad_batches=2"), "train")
    assert accumulation(4096, 128, 8, 4) == 1


def test_more_cpu_processes_than_cores_runs_with_a_warning(tmp_path, caplog):
    devices = (os.cpu_count() or 1) + 1
    _, _, trainer = build(compose_train("model=gpt_nano", "trainer.accelerator=cpu", f"trainer.devices={devices}",
                                        f"paths.output_dir={tmp_path}"))
    assert trainer.world_size == devices
    assert f"trainer.devices={devices} CPU processes on" in caplog.text


def test_fsdp_config_shards_each_transformer_block():
    from lightning.pytorch.strategies import FSDPStrategy

    from gptlab.model import Block

    cfg = compose_train("trainer=fsdp")
    assert cfg.trainer.accelerator == "gpu"
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy.sharding_strategy.name == "FULL_SHARD"


def test_param_groups_keep_their_dims_when_fsdp_flattens_parameters():
    module = GPTLitModule(model={"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "vocab_size": 64})
    expected = {g["name"]: len(g["params"]) for g in param_groups(module.model)}
    with torch.no_grad():
        for p in module.model.parameters():  # what FSDP(use_orig_params=True) shows: 1-D shards
            p.data = p.data.flatten()
    groups = {g["name"]: len(g["params"]) for g in param_groups(module.model, module.param_dims)}
    assert groups == expected and expected["matrix"] > 0


def test_slurm_launcher_config_asks_for_one_task_per_device_on_each_node():
    cfg = compose_train("hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2", hydra=True)
    HydraConfig.instance().set_config(cfg)
    try:
        launcher = instantiate(cfg.hydra.launcher)
    finally:
        HydraConfig.instance().cfg = None
    assert type(launcher).__name__ == "SlurmLauncher"
    assert (launcher.params["nodes"], launcher.params["tasks_per_node"], launcher.params["gpus_per_node"]) == (2, 4, 4)


def test_multirun_job_reruns_as_a_single_run_of_its_own_overrides(tmp_path, monkeypatch):
    # as when a user runs `python train.py -m ...` (under `python -m pytest`, __main__ is a module)
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    cfg = compose_train("seed=2", "trainer.devices=2", hydra=True)
    hc = cfg.hydra
    OmegaConf.set_readonly(hc, False)
    hc.runtime.output_dir = str(tmp_path / "sweep" / "1")
    hc.overrides.hydra = ["hydra.sweep.dir=x", "hydra.mode=MULTIRUN", "hydra/sweeper=basic", "hydra.verbose=true"]
    cmd = single_run_command(hc, ["train.py", "-m", "--config-name", "train", "seed=1,2", "trainer.devices=2"])
    assert cmd[1].endswith("train.py") and "-m" not in cmd and "seed=1,2" not in cmd
    assert cmd[2:4] == ["--config-name", "train"]
    assert cmd[4:] == ["seed=2", "trainer.devices=2", "hydra.verbose=true", f"hydra.run.dir='{tmp_path}/sweep/1'",
                       "hydra.output_subdir=null", "hydra.job.chdir=false"]
