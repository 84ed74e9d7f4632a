import time

import pytest
import torch

from gptlab.schedulers import constant, cosine, linear, seconds


def make_opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_cosine_warms_up_then_decays_to_min_lr_at_total_steps():
    opt = make_opt()
    sched = cosine(opt, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.55)  # halfway through the decay
    assert lrs[100] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)


@pytest.mark.parametrize("make", [cosine, linear])
def test_a_time_budget_ends_the_decay_before_max_steps(make):
    opt = make_opt()
    sched = make(opt, total_steps=10_000, warmup_steps=0, min_lr_ratio=0.1, max_time=0.3)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] > 0.9  # 1 of 10,000 steps, a moment of 0.3 s
    time.sleep(0.35)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_max_time_is_read_like_lightning():
    assert seconds("00:00:06:00") == 360
    assert seconds({"minutes": 1, "seconds": 30}) == 90
    assert seconds(None) is None


def test_constant_warms_up_then_holds():
    opt = make_opt()
    sched = constant(opt, warmup_steps=3)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1.0


def test_deterministic_runs_schedule_by_steps_alone(tmp_path, token_cache_dir, monkeypatch):
    from test_config import compose_train

    from gptlab.train import build

    monkeypatch.setenv("GPTLAB_CACHE_DIR", str(token_cache_dir))
    for deterministic, expected in ((False, "00:00:06:00"), (True, None)):
        cfg = compose_train(tmp_path, "model=gpt_nano", "trainer.max_time=00:00:06:00",
                            f"trainer.deterministic={deterministic}")
        _, module, _ = build(cfg)
        assert module.scheduler_factory["max_time"] == expected
