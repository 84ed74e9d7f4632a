"""Every gptlab command as a function: the console scripts of pyproject.toml (`gptlab-train`, `gptlab-eval`, ...,
what `pip install .` puts on the PATH), and what the repository's train.py, eval.py and generate.py run. The
configs come from gptlab/conf, the repository's conf/ (a link in a checkout, packaged in a wheel)."""

import importlib


def _command(name: str, module: str):
    def main():
        from gptlab.apps.runtime.startup import fast_malloc

        fast_malloc()  # first: restarts Python once with malloc settings that spare page faults
        from gptlab.config.cli import command

        # the task's module is imported after Hydra composed the config; it checks it before it imports torch
        command(name, lambda cfg: importlib.import_module(module).run(cfg))()

    main.__doc__ = f"gptlab's {name} command (conf/{name}.yaml)."
    return main


train = _command("train", "gptlab.apps.train")
evaluate = _command("eval", "gptlab.apps.evaluate")
generate = _command("generate", "gptlab.apps.generate")
export = _command("export", "gptlab.apps.export")
plot = _command("plot", "gptlab.apps.plot")
sweep = _command("sweep", "gptlab.apps.sweep")
scaling = _command("scaling", "gptlab.apps.scaling")
