import csv
import dataclasses
import re

import pytest
from conftest import REPO, TINY, run_train


def test_train_writes_checkpoints_metrics_and_a_summary(tiny_run):
    last = tiny_run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    (best,) = [p for p in (tiny_run / "checkpoints").iterdir() if p.name.startswith("step")]
    assert best.name.startswith("step6-")  # validated at steps 3 and 6: the last is the best, and one file
    assert best.samefile(last) and last.stat().st_nlink == 2
    rows = list(csv.DictReader(open(tiny_run / "csv" / "metrics.csv")))
    val_ppl = [float(r["val/ppl"]) for r in rows if r.get("val/ppl")]
    test_ppl = [float(r["test/ppl"]) for r in rows if r.get("test/ppl")]
    assert len(val_ppl) >= 3  # two during training, one final
    assert len(test_ppl) == 1
    assert all(1 < p < 60000 for p in val_ppl + test_ppl)
    assert any(r.get("train/loss") for r in rows)
    # a line per validation in train.log, to follow a run under nohup or SLURM with tail -f
    assert re.findall(r"step (\d)/6 · val ppl [\d.]+ · ", (tiny_run / "train.log").read_text()) == \
        ["3", "6"]


def test_a_quiet_start_and_a_summary_that_ends_with_the_next_commands(tiny_run):
    console = tiny_run.with_suffix(".console").read_text()
    for noise in ("💡 Tip", "litlogger", "LeafSpec", "Total FLOPs", "SumMetric", "model summary"):
        assert noise not in console, noise
    assert re.search(r"training 3\.3\dM parameters from step 0 to 6, precision \S+, 1 process\n", console)
    assert re.search(r"final validation and test over final_limit_batches=3 of each split: about \d+:\d\d:\d\d\n",
                     console)
    best = next((tiny_run / "checkpoints").glob("step6-*.ckpt"))
    summary = console[console.index("gptlab summary"):].splitlines()
    assert summary[-4:] == [f"  next       python generate.py ckpt_path={best} prompt='The history of'",
                            f"             python eval.py ckpt_path={best}",
                            f"             python -m gptlab.apps.plot dir={tiny_run}",
                            f"             python -m gptlab.apps.export ckpt_path={best} out={tiny_run}/hf"]


@pytest.mark.full
def test_debug_fast_runs_one_batch_of_each(tmp_path, token_cache_dir):
    proc = run_train(tmp_path, "model=gpt_nano", "debug=fast", "data.batch_size=2", "callbacks.progress_bar=null",
                     cache_dir=token_cache_dir)
    assert "val" in proc.stdout and "ppl" in proc.stdout
    assert "Epoch" not in proc.stdout  # progress_bar=null: no bar, not Lightning's default one


@pytest.mark.full
def test_bf16_mixed_and_gpt_mini_on_one_device(tmp_path, token_cache_dir):
    proc = run_train(tmp_path, *TINY, "model=gpt_mini", "model.block_size=64", "trainer.precision=bf16-mixed",
                     "trainer.devices=1", "trainer.max_steps=2", "trainer.val_check_interval=2",
                     "final_limit_batches=1", "callbacks.throughput.skip=1", "callbacks.throughput.peak_flops=1e12",
                     cache_dir=token_cache_dir)
    assert "precision bf16-mixed" in proc.stdout
    assert re.search(r"tokens/s, MFU \d+\.\d%", proc.stdout)  # against the peak FLOP/s given
    assert "6 layers × 192 wide" in proc.stdout


def test_a_model_far_too_slow_for_its_budget_is_said_before_it_starts(caplog, tmp_path):
    """model.n_layer=200 fits in memory, but a step takes seconds: a tenth of its 2,000 steps would not fit."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gptlab.apps.train import check_resources, model_config

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=["model.n_layer=200", "paths.cache_dir=null", f"paths.output_dir={tmp_path}"])
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    with caplog.at_level("WARNING", logger="gptlab.apps.train"):
        check_resources(cfg, trainer, model_config(cfg, 50257))
    (line,) = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"model \(1\d\d M parameters\): about [\d,.]+ s a training step on this machine \(at 30% "
                        r"of its peak FLOP/s\); only ~\d+ of its 2000 steps fit in its time budget", line), line
    caplog.clear()
    with caplog.at_level("WARNING", logger="gptlab.apps.train"):  # the default model's 4 layers: not a word
        check_resources(cfg, trainer, dataclasses.replace(model_config(cfg, 50257), n_layer=4))
    assert caplog.records == []
