"""What Hydra needs to compose gptlab's configs, set up by `setup()` before it does (train.py, eval.py, generate.py,
the tests): the schemas derived from the declarations (conf/train.yaml, eval.yaml and generate.yaml name them
first in their defaults), gptlab's resolvers, and the `--help` text. No torch, no lightning."""

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from gptlab.config import components
from gptlab.config.declare import describe, schema
from gptlab.config.run import APPS
from gptlab.config.rundir import config_subdir, job_name, restarted, run_dir


def register_schemas() -> None:
    for app, (declaration, _) in APPS.items():
        ConfigStore.instance().store(name=f"{app}_schema", node=schema(declaration, f"{app.title()}Schema"))


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("gptlab_run_dir", run_dir, replace=True)  # resume=true finds the run (rundir.py)
    OmegaConf.register_new_resolver("gptlab_restarted", restarted, replace=True)  # resume's default: a requeue
    OmegaConf.register_new_resolver("gptlab_config_subdir", config_subdir, replace=True)  # a rerun keeps its config
    OmegaConf.register_new_resolver("gptlab_job_name", job_name, replace=True)  # one log per rank
    OmegaConf.register_new_resolver("gptlab_help", help_text, replace=True)  # conf/hydra/default.yaml: --help


def help_text(app: str) -> str:
    """`python <app>.py --help`: how to call it, its config groups (Hydra's $APP_CONFIG_GROUPS), and every key
    gptlab declares for it with its type, default and help, as Hydra's help template (a `$` is written `$$`)."""
    declaration, _ = APPS[app]
    rows = describe(declaration)
    width = max(len(k) for k, *_ in rows)
    lines = [f"python {app}.py [group=option ...] [key=value ...]", "", "== Config groups (group=option) ==",
             "$APP_CONFIG_GROUPS", "", "== Keys (key=value): type, default, what it does =="]
    lines += [f"  {k:<{width}}  {t}  (default: {d})\n  {'':<{width}}  {h}" for k, t, d, h in rows]
    if app == "train":
        lines += ["", "== gptlab's components (their values: conf/callbacks, conf/optimizer, conf/scheduler, "
                      "conf/logger) =="]
        for name in _COMPONENTS:
            lines.append(f"  {name}: " + ", ".join(f"{k} ({t})" for k, t, _, _ in
                                                   describe(getattr(components, name))))
    lines += ["", "Print the composed config: --cfg job. Every key, with its bounds: docs/config.md.",
              "Hydra's own flags: --hydra-help."]
    return "\n".join(lines).replace("$", "$$").replace("$$APP_CONFIG_GROUPS", "$APP_CONFIG_GROUPS")


_COMPONENTS = [name for name, value in vars(components).items()
               if isinstance(value, type) and value.__module__ == components.__name__ and name[0].isupper()]


def reference() -> str:
    """docs/config.md: every declared key of every command and of gptlab's components, with its type, default,
    what it accepts and what it does (`python scripts/config_reference.py` writes it; a test keeps it current)."""

    def cell(text):
        return str(text).replace("|", "\\|").replace("$", "\\$")

    def table(rows):
        out = ["| key | type | default | what it does [what it accepts] |", "| --- | --- | --- | --- |"]
        return out + [f"| `{k}` | {cell(t)} | `{cell(d)}` | {cell(h)} |" for k, t, d, h in rows]

    lines = ["# Every config key", "",
             "Generated from the declarations in src/gptlab/config/ by `python scripts/config_reference.py` (a test "
             "checks that it is current). `python <command>.py --help` prints the same for one command. Keys whose "
             "default is \"(set by the config)\" take their value from conf/; every other key of a component "
             "built by `_target_` (Lightning's callbacks and loggers, torch's optimizers, the Trainer's other "
             "arguments) is that library's, and checked by it.", ""]
    for app, (declaration, _) in APPS.items():
        lines += [f"## {app}", "", *table(describe(declaration)), ""]
    lines += ["## gptlab's components", "",
              "Their values are in conf/callbacks/default.yaml, conf/optimizer/muon.yaml, conf/scheduler/ and "
              "conf/logger/wandb.yaml, under the node that names the class as its `_target_`.", ""]
    for name in _COMPONENTS:
        lines += [f"### {name}", "", *table(describe(getattr(components, name))), ""]
    return "\n".join(lines)


def setup() -> None:
    register_resolvers()
    register_schemas()
