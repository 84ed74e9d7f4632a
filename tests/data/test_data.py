import functools
import hashlib
import http.server
import itertools
import logging
import os
import re
import shutil
import socket
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gptlab.config.rundir import repo_root
from gptlab.data import IGNORE_INDEX, EvalWindows, TrainWindows
from gptlab.data.datamodule import WikiText2DataModule
from gptlab.data.sampler import ResumableSampler, Shuffle
from gptlab.data.token_cache import safe_chunks
from gptlab.data.tokenizer import Tokenizer, _use_local_bpe_files
from gptlab.errors import GptlabError

SPLITS = ("train", "valid", "test")
# lines, words, words_eol, as published (shared/data/README.md)
EXPECTED = {
    "train": (36_718, 2_051_910, 2_088_628),
    "valid": (3_760, 213_886, 217_646),
    "test": (4_358, 241_211, 245_569),
}


@pytest.fixture(scope="module")
def dm(token_cache_dir):
    dm = WikiText2DataModule(data_dir=DATA_DIR,
                             cache_dir=token_cache_dir, block_size=64, batch_size=4, eval_batch_size=8, download=False)
    dm.prepare_data()
    dm.setup()
    return dm


def _valid_dm(cache_dir, **kw):
    return WikiText2DataModule(data_dir=DATA_DIR,
                               cache_dir=cache_dir, splits=("valid",), block_size=32, download=False, **kw)


# --- tokenization and statistics of the real files


def test_train_split_tokenizes_like_one_whole_file_encode(dm, data_dir):
    ids = dm.ids("train")
    assert ids.dtype == np.uint16
    assert len(ids) == 2_448_382
    whole = dm.encoding.encode((data_dir / "wikitext-2" / "wiki.train.tokens").read_text(encoding="utf-8"))
    assert np.array_equal(ids, whole)


def test_safe_chunks_encode_like_the_whole_text(data_dir):
    tok = Tokenizer("gpt2")
    tricky = "a  b\n\n c \n d  e   f\n 12 345 x\u00a0y 's don't ?? !x \t\tq z \n\n\n = T = \n \n" * 3
    valid = (data_dir / "wikitext-2" / "wiki.valid.tokens").read_text(encoding="utf-8")[:200_000]
    for text, size in [(tricky, 1), (tricky, 7), (valid, 50), (valid, 2000)]:
        chunks = safe_chunks(text, size)
        assert "".join(chunks) == text
        assert len(chunks) > min(len(text) // size // 10, 40)
        assert [i for ids in tok.encode_batch(chunks) for i in ids] == tok.encode(text)


def test_split_stats_match_published_counts(dm, data_dir):
    for split, (lines, words, words_eol) in EXPECTED.items():
        st = dm.stats[split]
        assert (st.lines, st.words, st.words_eol) == (lines, words, words_eol)
        assert st.bytes == (data_dir / "wikitext-2" / f"wiki.{split}.tokens").stat().st_size
        assert st.tokens == len(dm.ids(split))


def test_raw_variant_reads_the_raw_files(token_cache_dir):
    raw = WikiText2DataModule(data_dir=DATA_DIR,
                              cache_dir=token_cache_dir, variant="raw", splits=("valid", "test"), download=False)
    raw.prepare_data()
    assert (raw.stats["valid"].lines, raw.stats["valid"].bytes) == (3_760, 1_146_846)
    assert raw.encoding.decode(raw.ids("test")[:20]).startswith(" \n = Robert Boulter = \n")


# --- eval windows


def _check_eval_windows(ids: np.ndarray, block_size: int, stride: int | None):
    """Every target ids[1:] is scored exactly once, in order; x holds the right context; padding is 0 / -100."""
    S = stride or block_size
    ds = EvalWindows(ids, block_size, stride)
    assert ds.num_targets == max(len(ids) - 1, 0)
    if len(ds) == 0:
        return
    items = [ds[k] for k in range(len(ds))]
    x, y = (torch.stack([item[i] for item in items]).numpy() for i in (0, 1))
    assert x.shape == y.shape == (len(ds), block_size)
    scored = y != IGNORE_INDEX
    assert scored.sum() == len(ids) - 1
    assert np.array_equal(y[scored], ids[1:])
    assert scored.any(axis=1).all(), "a window that scores nothing is wasted"
    pos = np.arange(len(ds))[:, None] * S + np.arange(block_size)[None, :]  # position in ids of each x
    real = pos < len(ids) - 1
    assert np.array_equal(x[real], ids[pos[real]]) and (x[~real] == 0).all()
    assert np.array_equal(y[real & scored], ids[pos[real & scored] + 1]) and not scored[~real].any()
    assert not scored[1:, : block_size - S].any(), "context positions of later windows must not be scored"


@pytest.mark.parametrize(
    "n, block_size, stride",
    [(0, 4, None), (1, 4, None), (2, 4, None), (5, 4, None), (6, 4, None), (9, 4, None),
     (10, 4, 2), (11, 4, 1), (12, 4, 3), (37, 8, 3), (8, 8, 8), (100, 8, 5)],
)  # fmt: skip
def test_eval_windows_score_every_token_once_small(n, block_size, stride):
    _check_eval_windows(np.arange(1, n + 1, dtype=np.int64) * 3, block_size, stride)


@pytest.mark.parametrize("stride", [None, 24])
def test_val_windows_score_every_token_once(dm, stride):
    _check_eval_windows(np.asarray(dm.ids("valid"), dtype=np.int64), 64, stride)


def test_val_dataloader_scores_every_token_once(dm):
    n_scored = sum(int((y != IGNORE_INDEX).sum()) for _, y in dm.val_dataloader())
    assert n_scored == len(dm.ids("valid")) - 1 == dm.val_dataset.num_targets


def test_eval_windows_reject_bad_stride():
    for stride in (0, 9):
        with pytest.raises(ValueError, match="stride"):
            EvalWindows(np.arange(20), 8, stride)


# --- train windows


def test_train_windows_are_shifted_by_one(dm):
    ids = dm.ids("train")
    ds = dm.train_dataset
    assert len(ds) == len(ids) - 64
    for i in (0, 12_345, len(ds) - 1):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (64,)
        assert np.array_equal(x.numpy(), ids[i : i + 64]) and np.array_equal(y.numpy(), ids[i + 1 : i + 65])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_random_sampling_is_seeded(token_cache_dir):
    def first_batch(seed):
        dm = WikiText2DataModule(data_dir=DATA_DIR,
                                 cache_dir=token_cache_dir, block_size=16, batch_size=8, seed=seed, download=False)
        dm.setup("fit")
        loader = dm.train_dataloader()
        return [next(iter(loader))[0] for _ in range(2)]  # two epochs

    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1]), "each epoch draws new offsets"


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 65_537])
def test_shuffle_is_a_seeded_permutation(n):
    order = Shuffle(n, seed=5)(torch.arange(n))
    assert sorted(order.tolist()) == list(range(n))
    assert torch.equal(order, Shuffle(n, seed=5)(torch.arange(n)))
    if n >= 17:
        assert not torch.equal(order, Shuffle(n, seed=6)(torch.arange(n)))
        assert not torch.equal(order, torch.arange(n))


def test_shuffled_order_is_not_correlated_with_position():
    n = 200_000
    order = Shuffle(n, seed=0)(torch.arange(n)).double()
    assert abs(torch.corrcoef(torch.stack([order, torch.arange(n).double()]))[0, 1]) < 0.01
    assert abs(torch.corrcoef(torch.stack([order[:-1], order[1:]]))[0, 1]) < 0.01  # neighbours independent
    gaps = (order[1:] - order[:-1]).abs()
    assert (gaps < n / 100).double().mean() < 0.03  # consecutive samples from distant parts of the corpus


def test_sampler_of_a_corpus_of_any_size_starts_at_once_and_ranks_stay_disjoint():
    n = 500_000_000  # windows of an OpenWebText-sized corpus: a randperm of them would take 4 GB per rank
    ranks = [ResumableSampler(range(n), seed=3, num_replicas=4, rank=r) for r in range(4)]
    firsts = [list(itertools.islice(iter(s), 20_000)) for s in ranks]
    assert len(set().union(*firsts)) == 80_000 and all(0 <= i < n for f in firsts for i in f)
    resumed = ranks[1]
    resumed.resume_at(epoch=0, samples=19_000)
    assert list(itertools.islice(iter(resumed), 1000)) == firsts[1][19_000:]


def test_sequential_windows_do_not_overlap():
    ids = np.arange(1000)
    ds = TrainWindows(ids, 16, "sequential")
    starts = [int(ds[i][0][0]) for i in range(len(ds))]
    assert starts == list(range(0, 999 - 16 + 1, 16))
    assert len(ds) == 999 // 16
    x, y = ds[len(ds) - 1]
    assert int(y[-1]) <= 999


def test_unknown_sampling_is_rejected():
    with pytest.raises(ValueError, match="sampling"):
        TrainWindows(np.arange(100), 8, "shuffled")


def test_dataloaders_give_int64_batches(dm):
    train = dm.train_dataloader()
    x, y = next(iter(train))
    assert x.shape == y.shape == (4, 64) and x.dtype == torch.int64
    assert len(train) == len(dm.train_dataset) // 4  # drop_last
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 64) and torch.equal(x[0], torch.as_tensor(dm.ids("test")[:64].astype(np.int64)))


# --- token cache


def _cache_file(cache_dir: Path) -> Path:
    (npy,) = cache_dir.glob("wikitext2-tokens-valid-gpt2-*.npy")
    return npy


def test_second_setup_reuses_the_cache(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gptlab")
    first = _valid_dm(tmp_path)
    first.prepare_data()
    assert any("Tokenizing" in r.message for r in caplog.records)
    before = _cache_file(tmp_path).stat()

    caplog.clear()
    second = _valid_dm(tmp_path)
    second.setup("validate")
    assert not any("Tokenizing" in r.message for r in caplog.records)
    after = _cache_file(tmp_path).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert np.array_equal(second.ids("valid"), first.ids("valid"))
    assert second.stats["valid"] == first.stats["valid"]


def test_a_cache_that_cannot_be_written_is_named(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(GptlabError, match=re.escape(f"data.cache_dir={tmp_path}/a_file/cache: cannot write the "
                                                    f"token cache there (Not a directory)")):
        _valid_dm(tmp_path / "a_file" / "cache").prepare_data()


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(path: Path):
    data = bytearray(path.read_bytes())
    data[1000:1004] = bytes(b ^ 0xFF for b in data[1000:1004])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_truncate, _flip_bytes, lambda p: p.with_suffix(".json").unlink()])
def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, corrupt):
    good = np.array(_valid_dm(tmp_path).ids("valid"))
    corrupt(_cache_file(tmp_path))
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = _valid_dm(tmp_path).ids("valid")
    assert np.array_equal(rebuilt, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(_valid_dm(tmp_path).ids("valid"), good)


# --- source files: checksums, downloads, errors


def test_file_with_wrong_sha256_is_refused(tmp_path, data_dir):
    path = tmp_path / "wikitext-2" / "wiki.valid.tokens"
    path.parent.mkdir()
    data = bytearray((data_dir / "wikitext-2" / "wiki.valid.tokens").read_bytes())
    data[500] ^= 1
    path.write_bytes(bytes(data))
    dm = WikiText2DataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache", splits=("valid",), urls=[])
    with pytest.raises(GptlabError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(path) in msg and hashlib.sha256(data).hexdigest() in msg and dm.sha256["wiki.valid.tokens"] in msg
    assert path.read_bytes() == bytes(data), "a user's file must be left alone"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves www/wikitext-2-v1.zip (small fixture texts) on 127.0.0.1; yields (zip URL, texts, sha256 dict)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    texts = {s: f" \n = {s.title()} = \n \n The {s} text , with 3 @,@ 000 words . \n" * 40 for s in SPLITS}
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "wikitext-2-v1.zip", "w") as zf:
        for s, text in texts.items():
            zf.writestr(f"wikitext-2/wiki.{s}.tokens", text)
    sha = {f"wiki.{s}.tokens": hashlib.sha256(t.encode()).hexdigest() for s, t in texts.items()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=www))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/wikitext-2-v1.zip", texts, sha
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/wikitext-2-v1.zip"


def _check_downloaded(dm: WikiText2DataModule, where: Path, texts: dict):
    tok = Tokenizer("gpt2")
    for s, text in texts.items():
        assert (where / "wikitext-2" / f"wiki.{s}.tokens").read_text() == text
        assert np.array_equal(dm.ids(s), tok.encode(text))
        assert dm.stats[s].lines == 160
    assert sorted(p.name for p in where.rglob("*") if p.is_file() and p.suffix != ".npy" and p.suffix != ".json") == [
        "wiki.test.tokens",
        "wiki.train.tokens",
        "wiki.valid.tokens",
    ], "no temp files left behind"


def test_download_extracts_verifies_and_tokenizes(tmp_path, server):
    url, texts, sha = server
    dm = WikiText2DataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", urls=[url], sha256=sha)
    dm.prepare_data()
    _check_downloaded(dm, tmp_path / "data", texts)


def test_download_falls_back_to_the_next_url(tmp_path, server, caplog):
    url, texts, sha = server
    urls = [_closed_port_url(), url.replace("wikitext-2-v1", "missing"), url]
    dm = WikiText2DataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", urls=urls, sha256=sha)
    dm.prepare_data()
    _check_downloaded(dm, tmp_path / "data", texts)
    failures = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 2 and "404" in failures[1]


def test_download_goes_to_the_cache_dir_when_data_dir_is_not_writable(tmp_path, server):
    url, texts, sha = server
    (tmp_path / "a_file").write_text("")
    unwritable = tmp_path / "a_file" / "data"  # cannot be created, even by root
    dm = WikiText2DataModule(data_dir=unwritable, cache_dir=tmp_path / "cache", urls=[url], sha256=sha)
    dm.prepare_data()
    _check_downloaded(dm, tmp_path / "cache", texts)
    again = WikiText2DataModule(data_dir=unwritable, cache_dir=tmp_path / "cache", download=False, sha256=sha)
    assert np.array_equal(again.ids("valid"), dm.ids("valid"))


def test_download_with_a_wrong_checksum_is_not_installed(tmp_path, server):
    url, _, sha = server
    sha["wiki.test.tokens"] = "0" * 64
    dm = WikiText2DataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", urls=[url], sha256=sha)
    with pytest.raises(FileNotFoundError, match="expected 0000"):
        dm.prepare_data()
    assert not (tmp_path / "data" / "wikitext-2" / "wiki.test.tokens").exists()


def test_offline_error_names_the_paths_and_urls(tmp_path):
    urls = [_closed_port_url(), _closed_port_url().replace("127.0.0.1", "localhost")]
    dm = WikiText2DataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", urls=urls)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup("fit")
    msg = str(err.value)
    for path in ("wikitext-2/wiki.train.tokens", "wikitext-2/wiki.valid.tokens"):
        assert str(tmp_path / "data" / path) in msg
    assert all(u in msg for u in urls) and "GPTLAB_DATA_DIR" in msg
    assert "wiki.test.tokens" not in msg, "setup('fit') needs only train and valid"


def test_download_disabled_says_so(tmp_path):
    dm = WikiText2DataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    with pytest.raises(FileNotFoundError, match="download=False"):
        dm.prepare_data()
    assert not (tmp_path / "data").exists()


# --- WikiText-103: the same files, folders and checks under another corpus name


def _server_of(www: Path, monkeypatch) -> str:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=www))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_port}/"


def test_wikitext103_is_read_from_its_own_folder_and_cached_apart(tmp_path, data_dir):
    for split in SPLITS:  # a stand-in with WikiText-2's first lines: the real corpus is 540 MB
        lines = (data_dir / "wikitext-2" / f"wiki.{split}.tokens").read_text("utf-8").splitlines(True)[:300]
        (tmp_path / "data" / "wikitext-103").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "wikitext-103" / f"wiki.{split}.tokens").write_text("".join(lines), "utf-8")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=["data=wikitext103", f"data.data_dir={tmp_path / 'data'}",
                                          f"data.cache_dir={tmp_path / 'cache'}", "paths.output_dir=x"])
    assert cfg.data.corpus == "wikitext-103" and cfg.data.variant == "tokens"
    dm = instantiate(cfg.data, download=False)
    assert dm.urls == ["https://wikitext.smerity.com/wikitext-103-v1.zip",
                       "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"]
    assert np.array_equal(dm.ids("valid"), Tokenizer("gpt2").encode(
        (tmp_path / "data" / "wikitext-103" / "wiki.valid.tokens").read_text("utf-8")))
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.npy")] == ["wikitext103"]


def test_wikitext103_missing_names_its_archive_and_folder(tmp_path):
    dm = WikiText2DataModule(corpus="wikitext-103", variant="raw", data_dir=tmp_path / "data",
                             cache_dir=tmp_path / "cache", download=False)
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert msg.startswith("WikiText-103 (raw) split(s) train, valid, test not found")
    assert "wikitext-103-raw-v1.zip" in msg and str(tmp_path / "data" / "wikitext-103-raw" / "wiki.train.raw") in msg


def test_an_official_archive_with_another_md5_than_the_published_one_is_not_installed(tmp_path, monkeypatch):
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "wikitext-103-v1.zip", "w") as zf:
        for split in SPLITS:
            zf.writestr(f"wikitext-103/wiki.{split}.tokens", f" = {split} = \n" * 50)
    monkeypatch.setattr("gptlab.data.wikitext.HOSTS", (_server_of(www, monkeypatch),))  # the official host, here
    dm = WikiText2DataModule(corpus="wikitext-103", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="expected the published 9ddaacaf6af0710eda8c456decff7832"):
        dm.prepare_data()
    assert not (tmp_path / "data" / "wikitext-103").exists()
    shutil.copy(www / "wikitext-103-v1.zip", www / "my-copy.zip")  # a user's own archive: no MD5 to check
    dm = WikiText2DataModule(corpus="wikitext-103", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
                             block_size=8, urls=[dm.urls[0].replace("wikitext-103-v1", "my-copy")])
    dm.prepare_data()
    assert (tmp_path / "data" / "wikitext-103" / "wiki.test.tokens").read_text() == " = test = \n" * 50


# --- construction


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_size": 0}, "block_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
        ({"variant": "wikitext103"}, "variant"),
        ({"corpus": "wikitext-3"}, "corpus"),
        ({"sampling": "shuffled"}, "sampling"),
        ({"splits": ("train", "val")}, "splits"),
        ({"splits": ()}, "splits"),
        ({"eval_stride": 0}, "eval_stride"),
        ({"eval_stride": 257, "block_size": 256}, "eval_stride"),
        ({"tokenizer": "gpt5"}, "r50k_base"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_are_rejected_early(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        WikiText2DataModule(data_dir=DATA_DIR, cache_dir=tmp_path, **kwargs)


def test_dirs_default_to_the_repo_and_only_the_config_reads_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLAB_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("GPTLAB_CACHE_DIR", str(tmp_path / "c"))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        paths = compose("train", overrides=["paths.output_dir=x"]).paths
    assert (paths.data_dir, paths.cache_dir) == (str(tmp_path / "d"), str(tmp_path / "c"))
    monkeypatch.chdir(tmp_path)  # the checkout's folders, wherever the command runs from
    dm = WikiText2DataModule()  # the library itself reads no environment variable of gptlab's
    assert (dm.data_dir, dm.cache_dir) == (REPO / "data", REPO / ".cache" / "gptlab")
    assert repo_root() == REPO
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    _use_local_bpe_files()  # the BPE files of <repo>/data/tiktoken-cache (setup.sh links data/ to shared data)
    expected = REPO / "data" / "tiktoken-cache"
    assert os.environ.get("TIKTOKEN_CACHE_DIR") == (str(expected) if expected.is_dir() else None)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    (tmp_path / "d" / "tiktoken-cache").mkdir(parents=True)
    _use_local_bpe_files(tmp_path / "d")  # a data directory given to it comes first
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "d" / "tiktoken-cache")
    with pytest.raises(ValueError, match="expected a directory other than data.data_dir"):
        WikiText2DataModule(data_dir=tmp_path, cache_dir=tmp_path)


@pytest.mark.parametrize("name, variant", [("wikitext2", "tokens"), ("wikitext2_raw", "raw")])
def test_data_configs_instantiate(tmp_path, token_cache_dir, name, variant):
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copytree(REPO / "conf" / "data", conf / "data")
    (conf / "config.yaml").write_text(
        "defaults:\n  - data: wikitext2\n  - _self_\n"
        f"seed: 7\nmodel:\n  block_size: 32\npaths:\n  data_dir: null\n  cache_dir: {token_cache_dir}\n"
    )
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("config", overrides=[f"data={name}"])
    dm = instantiate(cfg.data, _target_="gptlab.data.datamodule.WikiText2DataModule")  # train.yaml's schema gives it
    assert isinstance(dm, WikiText2DataModule)
    assert (dm.variant, dm.block_size, dm.seed, dm.cache_dir) == (variant, 32, 7, token_cache_dir)
    assert dm.splits == SPLITS
