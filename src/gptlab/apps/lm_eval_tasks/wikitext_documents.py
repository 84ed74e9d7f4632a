"""The documents of WikiText-2 raw (validation and test) for the wikitext_gptlab task, from the local files that
gptlab's data module finds (data_dir= in --metadata, else GPTLAB_DATA_DIR, else <repo>/data); the detokeniser and
metrics are lm-eval's own wikitext ones."""

import os
from pathlib import Path

from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer

from gptlab.data.wikitext import SHA256, documents, find_files

__all__ = ["load", "detokenize", "process_results"]


def detokenize(doc):
    return wikitext_detokenizer(doc)


def load(data_dir=None, **_):
    import datasets

    data_dir = data_dir or os.environ.get("GPTLAB_DATA_DIR")
    from gptlab.config.rundir import repo_root

    dirs = [Path(d) for d in (data_dir, repo_root() / "data") if d]
    files = find_files("wikitext-2", "raw", ["valid", "test"], dirs, urls=[], sha256=SHA256["wikitext-2"],
                       download=False)  # sha256-verified
    return datasets.DatasetDict({
        name: datasets.Dataset.from_list([{"page": p} for p in documents(files[split][0].read_text("utf-8"))])
        for name, split in (("validation", "valid"), ("test", "test"))})
