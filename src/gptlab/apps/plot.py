"""`python -m gptlab.apps.plot dir=<run or multirun directory>`: the figures of a run (<dir>/plots/curves.png) or of a
multirun (<dir>/plots/sweep.png and one per job), or into `out=<folder>`, drawn by results/figures.py (conf/plot.yaml;
the keys: gptlab/config/run.py, PlotConfig)."""

from gptlab.config.validate import validate


def run(cfg) -> list:
    validate(cfg, "plot")
    from gptlab.apps.results.figures import write_figures

    files = write_figures(cfg.dir, cfg.out, cfg.format, cfg.dpi)
    for file in files:
        print(file)
    return files


if __name__ == "__main__":
    from gptlab.apps import commands

    commands.plot()  # the one definition of the command: also the console script gptlab-plot
