"""`python eval.py ckpt_path=...`: perplexity of a trained model on WikiText-2, comparable with the papers.

Each split is cut into the scoring windows of `data.EvalWindows` (stride = block_size: non-overlapping; a smaller
stride scores each token once with up to block_size - stride tokens of extra context) and scored with `GPT.score`.
The metrics come from `metrics.lm_metrics`, the code validation uses during training: token perplexity,
word-level perplexity (total NLL over the WikiText word count) and bits per byte.
"""

import contextlib
import json
import math
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from gptlab.apps.checks import check_eval_block_size
from gptlab.apps.validate import validate
from gptlab.data.datamodule import EvalWindows
from gptlab.data.wikitext import documents, find_files
from gptlab.errors import GptlabError
from gptlab.model.metrics import lm_metrics
from gptlab.training.checkpoint import load_for_inference

SPLITS = {"valid": ["valid"], "test": ["test"], "both": ["valid", "test"], "train": ["train"]}


@torch.inference_mode()
def score_windows(model, ids, stride=None, batch_size=32, limit_windows=None, device="cpu",
                  autocast=contextlib.nullcontext, align_end=False):
    """Summed NLL (nats), number of scored tokens and windows over the scoring windows of `ids`; only the first
    `limit_windows` windows when given. Also returns the number of windows of the whole split."""
    windows = EvalWindows(ids, model.config.block_size, stride, align_end)
    n = len(windows) if limit_windows is None else min(int(limit_windows), len(windows))
    device = torch.device(device)
    loader = DataLoader(Subset(windows, range(n)), batch_size=batch_size, pin_memory=device.type == "cuda")
    nll = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    for x, y in loader:
        with autocast():
            batch_nll, batch_count, _ = model.score(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        nll += batch_nll
        count += batch_count
    return nll.item(), int(count.item()), n, len(windows)


def split_metrics(model, ids, stats=None, **kwargs) -> dict:
    """lm_metrics of one split (loss, ppl, and with the split's statistics word_ppl and bpb), plus the tokens and
    windows scored and the speed. kwargs go to score_windows."""
    t0 = time.perf_counter()
    nll, count, windows, all_windows = score_windows(model, ids, **kwargs)
    seconds = time.perf_counter() - t0
    if count == 0:
        raise GptlabError("no token was scored: the split is empty or limit_windows is 0")
    return {**lm_metrics(nll, count, stats), "nll_sum": nll, "tokens": count, "windows": windows,
            "full_split": windows == all_windows, "seconds": seconds, "tokens_per_sec": count / seconds}


def document_metrics(model, tokenizer, pages, detokenize=None, **kwargs) -> dict:
    """lm-eval's document-level scoring (its wikitext task): each page on its own, after an end-of-text token, in
    non-overlapping windows of block_size, the last one reading a full block back from the page's end; word
    perplexity over
    the page's original whitespace-separated words and bits per byte over its original UTF-8 bytes. `detokenize`
    (lm-eval's wikitext detokeniser) turns the page into the text that is scored. kwargs go to score_windows."""
    nll, tokens, words, nbytes = 0.0, 0, 0, 0
    t0 = time.perf_counter()
    for page in pages:
        ids = np.array([tokenizer.eot_id, *tokenizer.encode(detokenize(page) if detokenize else page)])
        page_nll, count, _, _ = score_windows(model, ids, align_end=True, **kwargs)
        nll, tokens = nll + page_nll, tokens + count
        words, nbytes = words + len(re.split(r"\s+", page)), nbytes + len(page.encode("utf-8"))
    seconds = time.perf_counter() - t0
    return {"documents": len(pages), "tokens": tokens, "nll_sum": nll, "loss": nll / max(tokens, 1),
            "ppl": math.exp(min(nll / max(tokens, 1), 700)), "word_ppl": math.exp(min(nll / words, 700)),
            "bpb": nll / nbytes / math.log(2), "windows": None, "full_split": True, "seconds": seconds,
            "tokens_per_sec": tokens / seconds}


def wikitext_pages(dm, split) -> list[str]:
    """The articles of a raw WikiText split (data=wikitext2_raw), for document-level scoring."""
    files = find_files(dm.variant, [split], [dm.data_dir, dm.cache_dir], dm.urls, dm.sha256, dm.download)
    return documents(files[split][0].read_text("utf-8"))


def lm_eval_detokenizer():
    try:
        from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer
    except ImportError:
        raise GptlabError("documents=true scores the text as lm-eval's wikitext task does, with its detokeniser: "
                          "pip install -e '.[hf]' (lm-eval)") from None
    return lambda page: wikitext_detokenizer({"page": page})


def run(cfg: DictConfig) -> dict:
    """Evaluate cfg.ckpt_path on cfg.split; print a table and write it to cfg.report as JSON."""
    validate(cfg, "eval")  # every key, before the checkpoint is loaded (validate.py)
    torch.set_float32_matmul_precision("high")
    loaded = load_for_inference(cfg.ckpt_path, cfg.device, cfg.precision, tokenizer=cfg.data.tokenizer,
                                tokenizer_key="data.tokenizer", data_dir=cfg.data.data_dir,
                                init_from=cfg.get("init_from"))
    model, autocast, device = loaded.model, loaded.autocast, loaded.device
    block_size = model.config.block_size
    check_eval_block_size(cfg, block_size)  # data.block_size=1024 on a 256-token model: refused
    splits = SPLITS[cfg.split]
    dm = instantiate(cfg.data, block_size=block_size, splits=splits, seed=0)
    check_data_matches_run(dm, loaded.run_config)

    results = {}
    for split in splits:
        if cfg.get("documents"):  # lm-eval's method: each article on its own, detokenised
            pages = wikitext_pages(dm, split)[: cfg.limit_windows]  # limit_windows: the first N articles
            results[split] = document_metrics(model, loaded.tokenizer, pages, lm_eval_detokenizer(),
                                              batch_size=cfg.batch_size, device=device, autocast=autocast)
            continue
        results[split] = split_metrics(model, dm.ids(split), dm.stats[split], stride=cfg.stride,
                                       batch_size=cfg.batch_size, limit_windows=cfg.limit_windows,
                                       device=device, autocast=autocast)
    report = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()) if cfg.ckpt_path else f"init_from={cfg.init_from}",
        "data": {"variant": dm.variant, "tokenizer": dm.tokenizer_name},
        "block_size": block_size,
        "stride": cfg.stride or block_size,
        "precision": loaded.precision,
        "device": str(device),
        **results,
    }
    print(format_table(report), flush=True)
    if cfg.get("report"):
        Path(cfg.report).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.report).write_text(json.dumps(report, indent=2) + "\n")
        print(f"  written to {cfg.report}", flush=True)
    return report


def check_data_matches_run(dm, trained):
    """A variant or tokenizer other than the training run's (its config `trained`) is allowed, with a warning."""
    if trained is None or "data" not in trained:
        return
    for key in ("variant", "tokenizer"):
        was, now = trained.data.get(key), getattr(dm, "tokenizer_name" if key == "tokenizer" else key)
        if was is not None and was != now:
            warnings.warn(f"the model was trained with data.{key}={was} but is evaluated with data.{key}={now}",
                          stacklevel=2)


def format_table(report) -> str:
    head = (f"gptlab eval  {report['ckpt_path']}\n  WikiText-2 {report['data']['variant']}, tokenizer "
            f"{report['data']['tokenizer']}, block {report['block_size']}, stride {report['stride']}, "
            f"{report['precision']} on {report['device']}")
    rows = [f"  {'split':<6} {'tokens':>9} {'loss':>8} {'ppl':>10} {'word ppl':>10} {'bits/byte':>10} "
            f"{'tokens/s':>10}"]
    for split in ("train", "valid", "test"):
        if split in report:
            m = report[split]
            note = "" if m["full_split"] else f"  ({m['windows']} windows: word ppl and bits/byte extrapolated)"
            note = f"  ({m['documents']} documents, lm-eval's method)" if "documents" in m else note
            rows.append(f"  {split:<6} {m['tokens']:>9,} {m['loss']:>8.4f} {m['ppl']:>10.2f} "
                        f"{m.get('word_ppl', float('nan')):>10.2f} {m.get('bpb', float('nan')):>10.4f} "
                        f"{m['tokens_per_sec']:>10,.0f}{note}")
    return "\n".join([head, *rows])
