"""Hydra's Optuna sweeper (conf/sweep/optuna.yaml), ending as every gptlab sweep ends when all of its trials fail.

The plugin asks its study for the best trial once the trials are done, and a study without a completed trial
raises ValueError ("No trials are completed yet"): a traceback where the sweep table should be. Here that case
ends with the Sweep callback's table and one line instead (exit status 1), as a grid sweep with failed jobs does.
"""

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as HydraOptunaSweeper

from gptlab.apps.runtime.multirun import Sweep


class OptunaSweeper(HydraOptunaSweeper):
    def sweep(self, arguments):
        try:
            return super().sweep(arguments)
        except ValueError:
            rows = Sweep.table(self.sweeper.config)
            if any(r["status"] == "completed" for r in rows):
                raise  # not the study without a completed trial: a bug, with its traceback
            Sweep.end(rows)
