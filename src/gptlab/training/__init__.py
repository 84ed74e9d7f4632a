"""The training layer: the LightningModule, its callbacks (throughput, samples, resume checkpoint, step seed, NaN
guard, time budget), optimizers and schedules, checkpoint reading and writing (with the one checkpoint-to-model
loader), and the one place that resolves precision and device. Imports only from the data and model layers."""
