"""`python eval.py ckpt_path=...`: perplexity of a trained model on WikiText-2, comparable with the papers.

Each split is cut into the scoring windows of `data.EvalWindows` (stride = block_size: non-overlapping; a smaller
stride scores each token once with up to block_size - stride tokens of extra context) and scored with `GPT.score`.
The metrics come from `metrics.lm_metrics`, the code validation uses during training: token perplexity,
word-level perplexity (total NLL over the WikiText word count) and bits per byte.
"""

import json
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gptlab.config.run import check_data_fits_model
from gptlab.config.validate import validate
from gptlab.errors import GptlabError

SPLITS = {"valid": ["valid"], "test": ["test"], "both": ["valid", "test"], "train": ["train"]}


def wikitext_pages(corpus, split) -> list[str]:
    """The articles of a raw WikiText split (data=wikitext2_raw), for document-level scoring."""
    from gptlab.data.wikitext import documents

    return documents(corpus.files([split])[split][0].read_text("utf-8"))


def lm_eval_detokenizer():
    try:
        from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer
    except ImportError:
        raise GptlabError("documents=true scores the text as lm-eval's wikitext task does, with its detokeniser: "
                          "pip install -e '.[hf]' (lm-eval)") from None
    return lambda page: wikitext_detokenizer({"page": page})


def check(cfg: DictConfig) -> None:
    """The config (no torch), then the device, the precision and the model to load, before anything is read."""
    validate(cfg, "eval")
    from gptlab.inference import check_sources

    check_sources(cfg.ckpt_path, cfg.init_from, cfg.device, cfg.precision)


def run(cfg: DictConfig) -> dict:
    """Evaluate cfg.ckpt_path on cfg.split; print a table and write it to cfg.report as JSON."""
    check(cfg)
    import torch

    from gptlab.data import WikiText2
    from gptlab.inference import document_metrics, load_for_inference, split_metrics

    torch.set_float32_matmul_precision("high")
    loaded = load_for_inference(cfg.ckpt_path, cfg.device, cfg.precision, tokenizer=cfg.data.tokenizer,
                                tokenizer_key="data.tokenizer", data_dir=cfg.data.data_dir,
                                init_from=cfg.get("init_from"))
    model, autocast, device = loaded.model, loaded.autocast, loaded.device
    block_size = model.config.block_size
    if cfg.data.block_size is not None:  # data.block_size=1024 on a 256-token model: refused; null: the model's
        check_data_fits_model(cfg.data.block_size, block_size)
    splits = SPLITS[cfg.split]
    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if not k.startswith("_")}
    dm = WikiText2(**{**data, "block_size": block_size, "splits": splits, "seed": 0})
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
        "data": {"corpus": dm.corpus, "variant": dm.variant, "tokenizer": dm.tokenizer},
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
    for key in ("corpus", "variant", "tokenizer"):
        was, now = trained.data.get(key), getattr(dm, key)
        if was is not None and was != now:
            warnings.warn(f"the model was trained with data.{key}={was} but is evaluated with data.{key}={now}",
                          stacklevel=2)


def format_table(report) -> str:
    from gptlab.data.wikitext import title

    head = (f"gptlab eval  {report['ckpt_path']}\n  {title(report['data']['corpus'])} {report['data']['variant']}, "
            f"tokenizer {report['data']['tokenizer']}, block {report['block_size']}, stride {report['stride']}, "
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
