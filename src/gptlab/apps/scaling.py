"""`python -m gptlab.apps.scaling dir=<multirun directory> [flops=...] [held_out=<run dir>]`: a scaling law fitted
to an IsoFLOP sweep's runs (python train.py -m +sweep=scaling): L(N, D) (Chinchilla's approach 3) and the IsoFLOP
parabolas (approach 2), their exponents with bootstrap intervals, the compute-optimal size for a budget, and a
held-out run against the fit; printed, written to <dir>/scaling.json, drawn in <out>/scaling.png
(results/scaling.py; conf/scaling.yaml; the keys: gptlab/config/run.py, ScalingConfig)."""

from gptlab.config.validate import validate
from gptlab.errors import GptlabError


def run(cfg) -> dict:
    validate(cfg, "scaling")
    from pathlib import Path

    try:
        import matplotlib  # noqa: F401
        import scipy  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError as e:
        raise GptlabError(f"the scaling fit needs {e.name}: pip install -e '.[plot]'") from None
    from gptlab.apps.results import scaling

    points = scaling.read_points(cfg.dir)
    flops = cfg.flops or 10 * max(p.c for p in points)
    report = scaling.scaling_fit(points, flops, cfg.bootstrap, cfg.seed)
    if cfg.held_out:
        report["held_out"] = scaling.held_out_check(report["numbers"], cfg.held_out)
    print(scaling.format_report(report))
    print(f"written to {scaling.write_report(cfg.dir, report)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = scaling.scaling_figure(points, report)
    figure.savefig(out / f"scaling.{cfg.format}", dpi=150)
    print(f"figure: {out / f'scaling.{cfg.format}'}")
    return report


if __name__ == "__main__":
    from gptlab.apps import commands

    commands.scaling()  # the one definition of the command: also the console script gptlab-scaling
