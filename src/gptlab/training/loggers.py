"""Lightning's CSVLogger, made to survive a resume.

Lightning's metrics writer deletes the metrics.csv it finds in its folder, so a run resumed with resume=true would
lose every row logged before the interruption. This one keeps them: the rows before the first step the resumed run
logs, those after it being logged again by the resumed run.
"""

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger (the same arguments), keeping the rows of the run it resumes: see the module."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeepingWriter(log_dir=self.log_dir)
        return self._experiment


class KeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # Lightning's deletes the file; this one reads it
        self._kept = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self._kept = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]

    def save(self) -> None:
        if self._kept is not None and self.metrics:  # the first save: the file is written again, kept rows first
            resumed_at = min(int(m["step"]) for m in self.metrics)
            self.metrics[0:0] = [row for row in self._kept if int(row["step"]) < resumed_at]
            self._kept = None
            self._fs.rm_file(self.metrics_file_path)
        super().save()
