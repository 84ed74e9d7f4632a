"""DataConfig: where WikiText-2 (or WikiText-103) is, how it is tokenized, and how it is cut into windows and
batches (the `data` group; gptlab.data.WikiText2DataModule is built from it)."""

from dataclasses import dataclass
from typing import ClassVar, Literal

from gptlab.config.declare import COUNT_MAX, PathName, Refused, Tokenizer, check_fields, key

SIZE = dict(ge=1, le=COUNT_MAX)
SPLITS = ("train", "valid", "test")


@dataclass(eq=False, kw_only=True)
class DataConfig:
    TARGET: ClassVar[str] = "gptlab.data.datamodule.WikiText2DataModule"

    data_dir: PathName | None = key(None, "the directory that holds wikitext-2/ (and wikitext-2-raw/, "
                                          "wikitext-103/, tiktoken-cache/); null: <repo>/data. May be read-only: "
                                          "downloads then go to cache_dir")
    cache_dir: PathName | None = key(None, "token caches (.npy) and downloads; null: <repo>/.cache/gptlab")
    corpus: Literal["wikitext-2", "wikitext-103"] = key("wikitext-2", "the text: WikiText-2 (2M words of Wikipedia "
                                                                     "articles) or WikiText-103 (103M; the same "
                                                                     "validation and test articles)")
    variant: Literal["tokens", "raw"] = key("tokens", "tokens: wiki.*.tokens (wikitext-2-v1, rare words are "
                                                      "<unk>); raw: wiki.*.raw (the original text)")
    tokenizer: Tokenizer = key("gpt2", "a tiktoken encoding")
    block_size: int | None = key(256, "tokens per window: conf/data/ sets ${model.block_size}; null (eval.py): the "
                                      "model's", **SIZE)
    batch_size: int = key(8, "training windows per step, per process (the micro-batch)", **SIZE)
    eval_batch_size: int | None = key(32, "windows per validation and test step; null: batch_size", **SIZE)
    sampling: Literal["random", "sequential"] = key("random", "training windows: random (a window at every offset, "
                                                              "shuffled) or sequential (non-overlapping)")
    eval_stride: int | None = key(None, "validation and test windows start this many tokens apart, each scoring "
                                        "its last eval_stride targets; null: block_size (non-overlapping)", **SIZE)
    num_workers: int = key(0, "DataLoader worker processes", ge=0, le=COUNT_MAX)
    seed: int = key(1337, "seeds the order of training windows", ge=0, le=2**32 - 1)
    download: bool = key(True, "fetch the official zip (sha256-verified) when a split is missing")
    splits: list[Literal["train", "valid", "test"]] = key(list(SPLITS), "the splits to load")
    urls: list[str] | None = key(None, "archive URLs tried in order ([]: none); null: the official one, then its "
                                       "mirror", empty=True)
    sha256: dict[str, str | None] | None = key(None, "{file name: sha256 or null} overriding the published "
                                                     "checksums (null: accept any file)")

    def __post_init__(self):
        check_fields(self, "data.")
        if None not in (self.eval_stride, self.block_size) and self.eval_stride > self.block_size:
            raise Refused("data.eval_stride", self.eval_stride, f"at most data.block_size={self.block_size}")
