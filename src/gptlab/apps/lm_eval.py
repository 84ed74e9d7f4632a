"""lm-evaluation-harness on gptlab models: the `gptlab` model class, and the offline WikiText-2 task.

    python -m gptlab.apps.lm_eval --model gptlab --model_args ckpt_path=<checkpoint> --tasks wikitext_gptlab
    python -m gptlab.apps.lm_eval --model gptlab --model_args init_from=gpt2 --tasks wikitext_gptlab,lambada_openai

This is lm-eval's own command line (`lm-eval run ...`, every option of it) with gptlab's model class registered
and gptlab's tasks (lm_eval_tasks/) on the include path: lm-eval has no plugin discovery, so `lm_eval --model
gptlab` works only after this module is imported (as `simple_evaluate(model="gptlab", ...)` in Python does).

`wikitext_gptlab` is lm-eval's `wikitext` task (document level, rolling log-likelihood, its detokeniser, word
perplexity over the original words, bits per byte) read from the local raw files instead of the Hub: the
validation and test splits of wikitext-2-raw, cut into articles at their ` = Title = ` lines.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from gptlab.config.cli import EXIT_CODE, format_error, refused_by
from gptlab.errors import GptlabError
from gptlab.inference import load_for_inference
from gptlab.model.decode import generate_tokens

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")


def _lm_base():
    from lm_eval.api.model import LM

    return LM


def register() -> type:
    """Register the `gptlab` model class with lm-eval (idempotent); returns it."""
    import lm_eval.models  # noqa: F401  lm-eval's own models (hf, ...): lazily, once, and only into an empty registry
    from lm_eval.api.registry import model_registry

    known = model_registry.get("gptlab", None)
    if known is not None:
        return known
    cls = _make_class()
    model_registry.register("gptlab")(cls)
    return cls


def _make_class():
    class GptlabLM(_lm_base()):
        """A gptlab checkpoint (ckpt_path=...) or pretrained GPT-2 (init_from=...) as an lm-eval model."""

        def __init__(self, ckpt_path=None, init_from=None, device="auto", precision="auto", batch_size=1,
                     max_batch_size=None, **unknown):
            if unknown:  # lm-eval passes every --model_args key on: a misspelt one would be dropped in silence
                known = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "unknown")]
                raise GptlabError(f"--model_args {','.join(f'{k}={v}' for k, v in unknown.items())}: not an "
                                  f"argument of the gptlab model ({', '.join(known)})")
            super().__init__()
            if str(device).startswith("cuda") and not torch.cuda.is_available():
                device = "cpu"  # lm-eval's command line asks for cuda:0 by default; its hf model falls back too
            loaded = load_for_inference(ckpt_path, device, precision, init_from=init_from)
            self.model, self.autocast, self.tokenizer = loaded.model, loaded.autocast, loaded.tokenizer
            self._device = loaded.device
            self.block_size = self.model.config.block_size

        # lm-eval's requests

        def loglikelihood(self, requests, disable_tqdm=False):
            out = []
            for req in requests:
                context, continuation = req.args
                ctx = self.tokenizer.encode(context) if context else [self.tokenizer.eot_id]
                out.append(self.score_tokens(ctx, self.tokenizer.encode(continuation)))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

            out = []
            for req in requests:
                (text,) = req.args
                windows = get_rolling_token_windows(self.tokenizer.encode(text), self.tokenizer.eot_id,
                                                    self.block_size, 1)
                out.append(sum(self.score_tokens(*make_disjoint_window(w))[0] for w in windows))
            return out

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for req in requests:
                context, kwargs = req.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
                ids = self.tokenizer.encode(context)[-(self.block_size - 1):]
                new, text = [], ""
                with torch.inference_mode(), self.autocast():
                    for token in generate_tokens(self.model, ids, int(kwargs.get("max_gen_toks", 256)),
                                                 temperature=temperature, eot_id=self.tokenizer.eot_id):
                        new.append(token)
                        text = self.tokenizer.decode(new)
                        if any(u in text for u in until):
                            break
                for u in until:
                    text = text.split(u)[0]
                out.append(text)
            return out

        @torch.inference_mode()
        def score_tokens(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
            """(log-probability of `continuation` after `context`, whether it is the greedy continuation); the
            input is cut to the last block_size tokens."""
            ids = (context + continuation)[-(self.block_size + 1):]
            x = torch.tensor([ids[:-1]], device=self._device)
            with self.autocast():
                logits = self.model.logits(self.model.hidden_states(x))
            logp = F.log_softmax(logits.float(), dim=-1)[0, -len(continuation):]
            target = torch.tensor(continuation, device=self._device)
            return logp.gather(1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all())

    GptlabLM.__name__ = "GptlabLM"
    return GptlabLM


def main(argv=None) -> None:
    """lm-eval's command line, with the gptlab model class and tasks."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in args:
        args += ["--include_path", str(TASKS_DIR)]
    register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *args]
    try:
        check_limit(args)
        with refused_by("lm-eval", (ValueError,)):  # lm-eval refuses its arguments (tasks, ...) with ValueError
            cli_evaluate()
    except GptlabError as e:  # a bad checkpoint path, init_from or argument: one line, as train.py says it
        print(format_error(str(e)), file=sys.stderr)
        sys.exit(EXIT_CODE)


def check_limit(args: list[str]) -> None:
    """lm-eval takes any number for --limit and fails deep inside on a negative one."""
    for i, arg in enumerate(args):
        if arg == "--limit" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--limit="):
            value = arg.partition("=")[2]
        else:
            continue
        number = _number(value)
        if number is None or number < 0:
            raise GptlabError(f"--limit {value}: expected a number ≥ 0 (examples per task, or a share of them "
                              f"below 1)")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


if __name__ == "__main__":
    main()
