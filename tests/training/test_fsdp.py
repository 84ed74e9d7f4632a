"""FSDP with two ranks, on CPU processes over gloo (the test-only strategy of cpu_fsdp.py): training, text samples
from the sharded model, the final validation and test, full and sharded checkpoints, a resume from a sharded one,
and eval/generate's loader on both, each compared with the same run under DDP."""

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_train
from test_ddp import NO_SHA, RUN, small_data_dir  # noqa: F401 (small_data_dir: a fixture)

from gptlab.inference import load_for_inference
from gptlab.model.checkpoint import load_checkpoint, load_model

pytestmark = pytest.mark.full  # real training processes: the full suite, not the quick tier

FSDP = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.strategy._target_=cpu_fsdp.CPUFSDPStrategy"]
STEPS = [
    "optimizer=adamw", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
    "final_limit_batches=2", "callbacks.resume_checkpoint.every_n_train_steps=2",
    "callbacks.model_checkpoint.save_top_k=-1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_data_dir, token_cache_dir):  # noqa: F811
    """The same 4-step run of two processes under DDP, FSDP with full checkpoints and FSDP with sharded ones."""
    base = tmp_path_factory.mktemp("fsdp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
        common = [*RUN, *STEPS, f"data.data_dir={small_data_dir}"]
        out = {}
        sharded = [*FSDP, "trainer.strategy.state_dict_type=sharded"]
        for name, extra in (("ddp", []), ("full", FSDP), ("sharded", sharded)):
            proc = run_train(base / name, *common, *extra, cache_dir=token_cache_dir)
            out[name] = proc.stdout + proc.stderr
        # a sharded run that stopped after its step-2 save, resumed by the same command with resume=true
        resumed = base / "resumed"
        shutil.copytree(base / "sharded", resumed, ignore=shutil.ignore_patterns("result.json"))
        shutil.rmtree(resumed / "checkpoints" / "last.ckpt")
        shutil.copytree(next((resumed / "checkpoints").glob("step2-*")), resumed / "checkpoints" / "last.ckpt")
        proc = run_train(resumed, *common, *sharded, "resume=true",
                         cache_dir=token_cache_dir)
        out["resumed"] = proc.stdout + proc.stderr
    return base, out


def metrics(run_dir: Path, key: str) -> list[float]:
    return [float(r[key]) for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get(key)]


def test_fsdp_trains_and_scores_as_ddp_does(runs):
    base, out = runs
    ddp = {k: metrics(base / "ddp", k) for k in ("train/loss", "val/ppl", "test/ppl")}
    assert len(ddp["train/loss"]) == 4 and len(ddp["val/ppl"]) == 3 and len(ddp["test/ppl"]) == 1
    for name in ("full", "sharded"):
        assert "Starting with 2 processes" in out[name] and "gptlab summary" in out[name]
        for key, expected in ddp.items():  # the losses of every step, the final scores on the best checkpoint
            assert metrics(base / name, key) == pytest.approx(expected, rel=1e-5), (name, key)
        assert "3.32M parameters" in out[name]  # the model's, not one rank's shards
        # decoded at each validation by rank 0 from the weights gathered from both (greedy: argmax ties aside, DDP's)
        lines = (base / name / "samples.txt").read_text().splitlines()
        assert [line.split(">>>")[0] for line in lines] == \
            [line.split(">>>")[0] for line in (base / "ddp" / "samples.txt").read_text().splitlines()]
        assert len(lines) == 8


def test_fsdp_checkpoints_hold_the_weights_ddp_trained(runs):
    base, _ = runs
    ddp = load_model(base / "ddp" / "checkpoints" / "last.ckpt").state_dict()
    full, sharded = base / "full" / "checkpoints" / "last.ckpt", base / "sharded" / "checkpoints" / "last.ckpt"
    assert full.is_file() and sorted(p.name for p in sharded.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp",
                                                                                "meta.pt"]
    for ckpt in (full, sharded):
        assert load_checkpoint(ckpt)["global_step"] == 4
        weights = load_model(ckpt).state_dict()
        assert weights.keys() == ddp.keys()
        for k in ddp:  # float noise: a few of AdamW's updates divide by a tiny second moment (a step is ~1e-3)
            torch.testing.assert_close(weights[k], ddp[k], rtol=1e-4, atol=5e-5, msg=lambda m, k=k: f"{k}: {m}")
    loaded = load_for_inference(sharded, device="cpu", precision="32-true")  # what eval.py and generate.py load
    assert loaded.run_config is not None and loaded.model.num_params() == load_model(full).num_params()


def test_a_sharded_run_resumes_from_its_last_checkpoint_to_the_same_weights(runs):
    base, out = runs
    assert "Resuming" in out["resumed"] and "from step 2 to 4" in out["resumed"]
    assert load_checkpoint(base / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 4
    straight = load_model(base / "sharded" / "checkpoints" / "last.ckpt").state_dict()
    resumed = load_model(base / "resumed" / "checkpoints" / "last.ckpt").state_dict()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-6, atol=1e-7)
    assert metrics(base / "resumed", "test/ppl")[-1] == pytest.approx(metrics(base / "sharded", "test/ppl")[-1],
                                                                      rel=1e-6)
