"""`python generate.py ckpt_path=... prompt="The history of"`: text from a trained model, streamed as it comes, with
the decoder of gptlab.model.decode; or a task's prompts scored against references (tasks.py)."""

import sys
from pathlib import Path

from omegaconf import DictConfig

from gptlab.config.validate import validate
from gptlab.errors import GptlabError


def read_prompts(stream):
    """Prompts from `stream`, one per line, as they come; blank lines are skipped."""
    interactive = stream.isatty()
    while True:
        if interactive:
            print("prompt> ", end="", file=sys.stderr, flush=True)
        line = stream.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")


def check(cfg: DictConfig) -> None:
    """The config (no torch), then the device, the precision and the model to load, before anything is read."""
    validate(cfg, "generate")
    from gptlab.inference import check_sources

    check_sources(cfg.ckpt_path, cfg.init_from, cfg.device, cfg.precision)


def run(cfg: DictConfig):
    """Stream continuations of cfg.prompt (or of each line of stdin); with cfg.task_file, score a task instead."""
    check(cfg)
    if cfg.prompt is None and not cfg.get("task_file") and (sys.stdin is None or sys.stdin.closed):
        raise GptlabError("no prompt: give prompt=... (stdin is closed, so no prompts can be read from it)")
    import torch

    from gptlab.apps import tasks
    from gptlab.inference import load_for_inference
    from gptlab.model.decode import complete

    task = cfg.get("task")
    records = tasks.read_records(cfg.task_file) if cfg.get("task_file") else None  # bad records: fail early
    loaded = load_for_inference(cfg.ckpt_path, cfg.device, cfg.precision, tokenizer=cfg.tokenizer,
                                init_from=cfg.get("init_from"),
                                data_dir=cfg.paths.data_dir)
    model, autocast, tokenizer, device = loaded.model, loaded.autocast, loaded.tokenizer, loaded.device
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    sampling = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                    top_p=cfg.top_p, generator=generator, stop=cfg.get("stop"))

    if records is not None:

        def predict(text):
            with autocast():
                return complete(model, tokenizer, tasks.render(task.template, text), **sampling).strip()

        return tasks.evaluate_task(records, task.metric, predict, Path(cfg.out_dir))

    prompts = [str(cfg.prompt)] if cfg.prompt is not None else read_prompts(sys.stdin)
    given = 0
    for prompt in prompts:
        given += 1
        text = tasks.render(task.template, prompt) if task is not None else prompt
        for i in range(cfg.num_samples):
            if cfg.num_samples > 1:
                print(f"--- sample {i + 1} of {cfg.num_samples}", flush=True)
            sys.stdout.write(text)
            with autocast():
                complete(model, tokenizer, text, out=sys.stdout, **sampling)
            sys.stdout.write("\n")
            sys.stdout.flush()
    if given == 0:
        raise GptlabError("no prompt: give prompt=... or type prompts on stdin, one per line")
