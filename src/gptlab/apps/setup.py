"""What an entry point sets up before Hydra composes its config: gptlab's OmegaConf resolvers, and filters for the
Lightning warnings that do not apply to gptlab. Called explicitly (train.py, eval.py, generate.py, the tests), never
as a side effect of an import."""

import warnings

from omegaconf import OmegaConf

from gptlab.apps.resume import config_subdir, run_dir
from gptlab.apps.schema import register_schemas
from gptlab.training.precision import trains_on_cpu


def on_cpu(value, accelerator):
    """${gptlab_on_cpu:VALUE,${trainer.accelerator}}: VALUE when the run trains on the CPU, else null (the default
    run's time budget, conf/experiment/cpu_10min.yaml)."""
    return value if trains_on_cpu(accelerator) else None


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("gptlab_run_dir", run_dir, replace=True)  # resume=true finds the run (resume.py)
    OmegaConf.register_new_resolver("gptlab_config_subdir", config_subdir, replace=True)  # a rerun keeps its config
    OmegaConf.register_new_resolver("gptlab_on_cpu", on_cpu, replace=True)


def quiet_known_warnings() -> None:
    # val/ and test/ values are summed over ranks by their metrics before they are logged: the hint does not apply
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/.*sync_dist=True")
    # Lightning warns about resuming mid-epoch unless the DataLoader has state_dict methods; the data module holds
    # that state (its position, data/sampler.py), so the warning does not apply
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def setup() -> None:
    register_resolvers()
    register_schemas()  # the types Hydra checks while composing (schema.py)
    quiet_known_warnings()
