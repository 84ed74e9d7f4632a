"""The apps layer: what the commands run. train.py, evaluate.py, generate.py (with tasks.py) for the three entry
points; export.py, plot.py, sweep.py and lm_eval.py for `python -m gptlab.apps.<name>`; runtime/ (process plumbing:
the malloc restart, several processes, multirun jobs, resuming, W&B) and results/ (result.json, runs read back,
the sweep table, figures). Every command checks its config (gptlab/config) before it imports torch. Nothing below
imports this layer."""
