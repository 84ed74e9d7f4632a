"""Every option of every config group composes with train.yaml and builds its object."""


import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from gptlab.model import GPT
from gptlab.training.module import param_groups

CONF = REPO / "conf"

def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))

def compose_train(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)  # what a real run sets
    HydraConfig.instance().set_config(cfg)
    return cfg

@pytest.mark.parametrize("option", options("model"))
def test_model_options_build_a_gpt(tmp_path, option):
    cfg = compose_train(tmp_path, f"model={option}")
    with torch.device("meta"):  # gpt2_medium's 350M parameters cost nothing here
        model = GPT(instantiate(cfg.model))
    assert model.num_params() > 0
    assert cfg.data.block_size == model.config.block_size

@pytest.mark.parametrize("option", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_options_step(tmp_path, option, scheduler):
    cfg = compose_train(tmp_path, f"optimizer={option}", f"scheduler={scheduler}", "model=gpt_nano",
                        "model.vocab_size=100")
    model = GPT(instantiate(cfg.model))
    opt = instantiate(cfg.optimizer)(param_groups(model))
    sched = instantiate(cfg.scheduler)(opt)
    x = torch.randint(0, 100, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    opt.step()
    sched.step()
    assert not torch.equal(before, model.transformer.h[0].attn.c_attn.weight)

@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks", "data"])
def test_trainer_logger_callbacks_and_data_options_instantiate(tmp_path, group):
    for option in options(group):
        cfg = compose_train(tmp_path, f"{group}={option}")
        node = cfg[group]
        if group in ("logger", "callbacks"):
            objs = [instantiate(c) for c in (node or {}).values() if c and "_target_" in c]
            assert option == "none" or objs
        elif group == "trainer":
            node = dict(node)
            node["precision"] = "32-true" if node["precision"] == "auto" else node["precision"]
            if node.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
                continue  # composes (above); building it needs a GPU
            assert instantiate(node).max_steps == cfg.trainer.max_steps
        else:
            assert instantiate(node).block_size == cfg.model.block_size

@pytest.mark.parametrize("group", ["experiment", "debug"])
def test_experiment_and_debug_options_compose(tmp_path, group):
    for option in options(group):
        cfg = compose_train(tmp_path, f"{group}={option}")
        assert cfg.trainer._target_ == "lightning.Trainer"
