"""The WikiText text files (WikiText-2, WikiText-103): find them, download the official archive when missing, verify
their checksums.

Layout, as in the official zips: `<dir>/wikitext-2/wiki.{train,valid,test}.tokens` (tokens variant) and
`<dir>/wikitext-2-raw/wiki.{train,valid,test}.raw` (raw variant); `wikitext-103/` and `wikitext-103-raw/` alike.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gptlab.errors import GptlabError, GptlabFileNotFoundError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EXTENSIONS = {"tokens": ".tokens", "raw": ".raw"}  # by variant
HOSTS = ("https://wikitext.smerity.com/", "https://s3.amazonaws.com/research.metamind.io/wikitext/")

# Published sha256 of each extracted file, by corpus (see shared/data/SOURCES.md). None is published for
# WikiText-103's files: its tokens archive is checked against its published MD5 instead (ARCHIVE_MD5), its raw
# archive not at all; data.sha256 pins the files a user has.
SHA256 = {
    "wikitext-2": {
        "wiki.train.tokens": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
        "wiki.valid.tokens": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        "wiki.test.tokens": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        "wiki.train.raw": "6707892fa3788b5ab9ed78ab5ff37d9fe825f6011a2ad4fcd6a6d467f0e7da57",
        "wiki.valid.raw": "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7",
        "wiki.test.raw": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    },
    "wikitext-103": {},
}
# The official archives' MD5 as torchtext and others publish it: checked on a download from the official URLs.
ARCHIVE_MD5 = {"wikitext-103-v1.zip": "9ddaacaf6af0710eda8c456decff7832"}


def subdir(corpus: str, variant: str) -> str:
    """'wikitext-2', 'wikitext-103-raw' and the like: the folder the official archive extracts to."""
    return corpus + ("-raw" if variant == "raw" else "")


def archive(corpus: str, variant: str) -> str:
    return f"{subdir(corpus, variant)}-v1.zip"


def official_urls(corpus: str, variant: str) -> list[str]:
    return [host + archive(corpus, variant) for host in HOSTS]


def title(corpus: str) -> str:
    return corpus.replace("wikitext", "WikiText")


def relpath(corpus: str, variant: str, split: str) -> str:
    """'wikitext-2/wiki.train.tokens' and the like."""
    return f"{subdir(corpus, variant)}/wiki.{split}{EXTENSIONS[variant]}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str | None) -> str:
    """Return the file's sha256; raise GptlabError if it is not the expected one (None: accept any)."""
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise GptlabError(
            f"{path} has sha256 {actual}, expected {expected}. The file is corrupt or not the published "
            f"one; it was left untouched. Delete or replace it, and it will be downloaded again."
        )
    return actual


def find_files(
    corpus: str,
    variant: str,
    splits: Iterable[str],
    dirs: Sequence[Path],
    urls: Sequence[str],
    sha256: Mapping[str, str | None],
    download: bool = True,
) -> dict[str, tuple[Path, str]]:
    """Map each split to (path, sha256) of its verified text file, looking in each of `dirs` in turn.

    When a split is missing and `download` is on, fetches the archive from the first of `urls` that works and
    extracts the missing files into the first of `dirs` that is writable.
    """
    splits = list(splits)
    found = {s: p for s in splits if (p := _first_existing(dirs, relpath(corpus, variant, s)))}
    missing = [s for s in splits if s not in found]
    if missing:
        no_download = (None, ["  none: download=False"])
        dest, errors = _download(corpus, variant, missing, dirs, urls, sha256) if download else no_download
        if dest is None:
            raise GptlabFileNotFoundError(_missing_message(corpus, variant, missing, dirs, urls, errors))
        found.update((s, dest / relpath(corpus, variant, s)) for s in missing)
    return {s: (found[s], verify(found[s], sha256.get(found[s].name))) for s in splits}


def _download(
    corpus: str, variant: str, splits: list[str], dirs: Sequence[Path], urls: Sequence[str],
    sha256: Mapping[str, str | None]
) -> tuple[Path | None, list[str]]:
    """Try each URL in turn; return the directory the files went to (None if all failed) and the failures."""
    errors: list[str] = []
    try:
        dest = _first_writable(dirs)
    except OSError as e:
        return None, [f"  none: {e}"]
    for url in urls:
        try:
            _download_and_extract(url, corpus, variant, splits, dest, sha256)
            return dest, errors
        except Exception as e:  # whatever went wrong, try the next URL and report them all at the end
            log.warning("Download of %s failed: %s", url, e)
            errors.append(f"  {url}: {e.__class__.__name__}: {e}")
    return None, errors


def _first_writable(dirs: Sequence[Path]) -> Path:
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=d):
                return d
        except OSError:
            log.info("%s is not writable", d)
    raise OSError(f"none of {', '.join(map(str, dirs))} is writable")


def _first_existing(dirs: Sequence[Path], rel: str) -> Path | None:
    return next((d / rel for d in dirs if (d / rel).is_file()), None)


def _download_and_extract(
    url: str, corpus: str, variant: str, splits: list[str], dest: Path, sha256: Mapping[str, str | None]
) -> None:
    """Download the zip at `url` into a temp file in `dest` (checked against its published MD5 when it is an
    official archive that has one), then extract and verify the files of `splits`."""
    log.info("Downloading %s into %s", url, dest)
    fd, tmp_zip = tempfile.mkstemp(dir=dest, prefix=".download-", suffix=".zip.part")
    expected = ARCHIVE_MD5.get(archive(corpus, variant)) if url in official_urls(corpus, variant) else None
    try:
        md5 = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                md5.update(chunk)
                out.write(chunk)
        if expected is not None and md5.hexdigest() != expected:
            raise RuntimeError(f"the archive has MD5 {md5.hexdigest()}, expected the published {expected}")
        with zipfile.ZipFile(tmp_zip) as zf:
            members = {Path(n).name: n for n in zf.namelist()}
            for split in splits:
                target = dest / relpath(corpus, variant, split)
                if target.name not in members:
                    raise RuntimeError(f"the archive has no member named {target.name}")
                _extract_verified(zf, members[target.name], target, sha256.get(target.name))
    finally:
        Path(tmp_zip).unlink(missing_ok=True)


def _extract_verified(zf: zipfile.ZipFile, member: str, target: Path, expected: str | None) -> None:
    """Extract one member to a temp file next to `target`; move it into place only if the sha256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, zf.open(member) as src:
            while chunk := src.read(1 << 22):
                h.update(chunk)
                out.write(chunk)
        if expected is not None and h.hexdigest() != expected:
            raise RuntimeError(f"{member} in the archive has sha256 {h.hexdigest()}, expected {expected}")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; this is a shared file
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _missing_message(
    corpus: str, variant: str, splits: list[str], dirs: Sequence[Path], urls: Sequence[str], errors: list[str]
) -> str:
    folder = subdir(corpus, variant)
    wanted = "\n".join(f"  {d / relpath(corpus, variant, s)}" for s in splits for d in dirs[:1])
    looked = ", ".join(str(d / folder) for d in dirs)
    tried = "\n".join(errors) or "  none: no URLs given"
    return (
        f"{title(corpus)} ({variant}) split(s) {', '.join(splits)} not found (looked in {looked}).\n"
        f"Download attempts:\n{tried}\n"
        f"Put the files from {archive(corpus, variant)} ({', '.join(urls) or 'no URLs given'}) at:\n{wanted}\n"
        f"or set GPTLAB_DATA_DIR (or data_dir) to a directory that contains "
        f"{folder}/wiki.{{train,valid,test}}{EXTENSIONS[variant]}."
    )


def documents(text: str) -> list[str]:
    """The articles of a WikiText file, each from its ` = Title = ` line to the next one (the lines joined with
    "\\n", as lm-eval's document-level wikitext task has them); section headings (` = = Section = = `) stay inside."""
    pages, lines = [], []
    for line in text.split("\n"):
        heading = line.strip()
        if heading.startswith("= ") and heading.endswith(" =") and not heading.startswith("= ="):
            if "\n".join(lines).strip():
                pages.append("\n".join(lines))
            lines = []
        lines.append(line)
    if "\n".join(lines).strip():
        pages.append("\n".join(lines))
    return pages
