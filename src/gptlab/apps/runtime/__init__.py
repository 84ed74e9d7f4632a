"""Process plumbing of the commands: the malloc restart (startup.py), several processes and multirun jobs
(distributed.py, multirun.py), resuming a run (resume.py), the W&B logger (wandb.py)."""
