"""The apps layer: what train.py, eval.py and generate.py run, task prompts and scoring, sweeps, and the Hydra glue
(resolvers, the sweep callback, clear one-line errors, multirun jobs with several processes). Nothing below
imports it."""
