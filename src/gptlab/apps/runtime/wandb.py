"""Weights & Biases: Lightning's WandbLogger with gptlab's defaults (offline unless an API key is configured; in a
multirun each job is its own run, named after its overrides and grouped by sweep), the full resolved config, and
`finish_wandb`, which train.py calls after every job, also after a failed one."""

import logging
import netrc
import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

from gptlab.apps.results.table import short_value
from gptlab.apps.runtime.multirun import hydra_job
from gptlab.config import components
from gptlab.config.declare import check_values
from gptlab.config.run import configuration
from gptlab.errors import GptlabError

log = logging.getLogger(__name__)

# Without the Sweep callback's list of swept keys: overrides left out of run names, those that say where or how
# a job runs rather than what it trains.
NOT_IN_NAME = ("logger", "debug", "sweep", "hydra", "paths", "callbacks", "ckpt_path", "resume", "data.cache_dir",
               "data.data_dir")


def api_key_configured() -> bool:
    """Whether wandb will find credentials: WANDB_API_KEY, an identity token file, or `wandb login`'s netrc entry
    for the W&B host. Looked up here, without wandb's private auth modules, so it never prompts or connects."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(wandb_url()).hostname
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for path in candidates:
        path = Path(path).expanduser()
        if not path.is_file():
            continue
        try:
            return netrc.netrc(path).authenticators(host) is not None
        except (OSError, netrc.NetrcParseError):
            return False
    return False


def wandb_mode(offline: bool | None) -> str | None:
    """The mode for wandb.init: offline/online when forced by `offline`; None (wandb decides) when WANDB_MODE is
    set; otherwise offline unless an API key is configured."""
    if offline is not None:
        return "offline" if offline else "online"
    if os.environ.get("WANDB_MODE"):
        return None
    return None if api_key_configured() else "offline"


def wandb_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a connection to `url`'s host opens within `timeout` seconds, the name lookup included (in a thread:
    a lookup without network can hang far longer than a socket's timeout)."""
    parsed = urlparse(url)
    address = (parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
    opened = []

    def connect():
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def online_or_offline(mode: str | None, offline: bool | None) -> str | None:
    """`mode` (wandb_mode's), made offline, in one line, when W&B would go online and its host cannot be reached:
    wandb would retry for minutes, then fail. With logger.wandb.offline=false, a refusal instead."""
    goes_online = mode == "online" or (mode is None and os.environ.get("WANDB_MODE", "online") == "online")
    if not goes_online or reachable(wandb_url()):
        return mode
    if offline is False:
        raise GptlabError(f"logger.wandb.offline=false: {wandb_url()} cannot be reached from this machine (no "
                          f"network?). Set logger.wandb.offline=null to log offline and `wandb sync` later")
    log.warning("W&B: %s cannot be reached from this machine: logging offline, to upload later with `wandb sync`",
                wandb_url())
    return "offline"


def name_from_overrides(overrides, swept_keys=None) -> str:
    """`model=gpt_nano,optimizer=muon` from a job's overrides: those of the swept keys when known, else all but
    those in NOT_IN_NAME."""
    parts = []
    for override in overrides:
        key, _, value = override.partition("=")
        bare = key.lstrip("+~")
        if swept_keys is not None:
            if bare not in swept_keys:
                continue
        elif any(bare == k or bare.startswith(k + ".") or bare.startswith(k + "/") for k in NOT_IN_NAME):
            continue
        parts.append(f"{bare}={short_value(value)}")
    return ",".join(parts)


def sweep_group(job: dict) -> str:
    """A multirun job's W&B group: the sweep (its directory's name); in a sweep over seed, the sweep and the job's
    configuration (its swept values but the seed), so that W&B shows each configuration's seeds together."""
    sweep = Path(job["sweep_dir"]).name
    swept = set(job["swept_keys"] or ())
    if "seed" not in swept:
        return sweep
    return f"{sweep} {name_from_overrides(configuration(job['overrides']), swept - {'seed'})}".strip()


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger (every argument of it and of wandb.init works, e.g. `id` and `resume` to continue a
    run), with: `offline=None` (offline unless an API key is configured), multirun jobs named after their
    overrides and grouped by the sweep's directory name (and configuration, in a sweep over seed), and `watch`
    (gradients, parameters or all) to log histograms every `watch_log_freq` steps. The keys conf/logger/wandb.yaml
    sets are declared in gptlab/config/components.py (WandbLogger) and checked here, before wandb.init sees them."""

    def __init__(self, *, name, group, offline, watch, watch_log_freq, **kwargs):
        check_values(components.WandbLogger, dict(kwargs, name=name, group=group, offline=offline, watch=watch,
                                                  watch_log_freq=watch_log_freq))
        job = hydra_job()
        if job["sweep_dir"] is not None:
            name = name_from_overrides(job["overrides"], job["swept_keys"]) or name
            group = group or sweep_group(job)
        # wandb's ~35 lines a run (banner, history, summary, sync hint) repeat what gptlab's summary says and bury a
        # sweep's own output: silent, and finish_wandb says in one line where the run went
        kwargs.setdefault("settings", {"silent": True})
        mode = online_or_offline(wandb_mode(offline), offline)
        if mode is not None:
            kwargs["mode"] = mode  # not Lightning's `offline`, which refuses log_model (artifacts sync later)
        for key in ("id", "resume"):  # null in the config: Lightning's defaults
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
        super().__init__(name=name, group=group, **kwargs)
        if getattr(self, "_wandb_init", {}).get("anonymous", 0) is None:  # Lightning passes anonymous=None to
            del self._wandb_init["anonymous"]  # wandb.init, which warns that the setting is going away
        self.watch_what, self.watch_log_freq, self.watched = watch, watch_log_freq, False

    def log_graph(self, model, input_array=None):
        # Lightning calls this with the LightningModule at the start of fit, validate and test: hook it once
        if self.watch_what and not self.watched:
            net = getattr(model, "model", model)  # the GPT: training_step calls it, not the LightningModule
            # idx=0: the same chart names in every job of a sweep (wandb numbers models per process otherwise)
            self.experiment.watch(net, log=self.watch_what, log_freq=self.watch_log_freq, idx=0)
            self.watched = True


def log_config_to_wandb(trainer, config: dict):
    """The run's full resolved config (train.ran_config) into each W&B run (Lightning logs only the module's
    hyperparameters)."""
    loggers = [lg for lg in trainer.loggers if isinstance(lg, LightningWandbLogger)]
    if not loggers or not trainer.is_global_zero:
        return
    for logger in loggers:
        logger.experiment.config.update(config, allow_val_change=True)


def finish_wandb(failed: bool = False):
    """Close the active W&B run, marking it failed after an error, so the next job of a sweep starts its own; a
    silent run (a multirun's job) says in one line where it went."""
    wandb = sys.modules.get("wandb")  # never imported: no run to finish
    if wandb is None or wandb.run is None:
        return
    run = wandb.run
    wandb.finish(exit_code=1 if failed else 0)
    if run.settings.silent:
        where = f"wandb sync {run.settings.sync_dir}" if run.settings.mode == "offline" else run.url
        log.info("W&B run %s %s: %s", run.name, "failed" if failed else "finished", where)
