import pytest
import torch

from gptlab.training.schedulers import Constant, Cosine, Linear


def make_opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_cosine_warms_up_then_decays_to_min_lr_at_total_steps():
    opt = make_opt()
    sched = Cosine(total_steps=100, warmup_steps=10, min_lr_ratio=0.1)(opt)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.55)  # halfway through the decay
    assert lrs[100] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)


@pytest.mark.parametrize("make", [Cosine, Linear])
def test_a_schedule_moved_to_fewer_steps_keeps_them_in_its_state_dict(make):
    sched = make(total_steps=10_000, warmup_steps=10, min_lr_ratio=0.1)(make_opt())
    sched.lr_lambdas[0].total_steps = 40  # what a time budget does once it knows how many steps fit
    restored = make(total_steps=10_000, warmup_steps=10, min_lr_ratio=0.1)(make_opt())
    restored.load_state_dict(sched.state_dict())  # a resumed run: the checkpoint's schedule, not the config's
    assert restored.lr_lambdas[0].total_steps == 40
    assert [restored.lr_lambdas[0](s) for s in range(60)] == [sched.lr_lambdas[0](s) for s in range(60)]
    assert restored.lr_lambdas[0](40) == pytest.approx(0.1) and restored.lr_lambdas[0](25) > 0.1


def test_a_run_planned_before_it_begins_gets_the_warmup_of_its_length():
    """A compute budget (train_flops) sets the length once the model is built: the schedule is as if configured
    with it, the warmup at most half of it."""
    short = Cosine(total_steps=6, warmup_steps=10, min_lr_ratio=0.1)(make_opt()).lr_lambdas[0]  # debug=tiny's 6
    assert short.warmup_steps == 3
    short.plan(400)
    planned = Cosine(total_steps=400, warmup_steps=10, min_lr_ratio=0.1)(make_opt()).lr_lambdas[0]
    assert short.warmup_steps == 10 and [short(s) for s in range(420)] == [planned(s) for s in range(420)]
    short.plan(8)
    assert short.warmup_steps == 4 and short(8) == pytest.approx(0.1)


def test_constant_warms_up_then_holds():
    opt = make_opt()
    sched = Constant(warmup_steps=3)(opt)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1.0
