"""The WikiText-2 text files: find them, download the official archive when missing, verify their sha256.

Layout, as in the official zips: `<dir>/wikitext-2/wiki.{train,valid,test}.tokens` (tokens variant) and
`<dir>/wikitext-2-raw/wiki.{train,valid,test}.raw` (raw variant).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gptlab.errors import GptlabError, GptlabFileNotFoundError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
VARIANTS = {"tokens": ("wikitext-2", ".tokens"), "raw": ("wikitext-2-raw", ".raw")}

URLS = {
    "tokens": [
        "https://wikitext.smerity.com/wikitext-2-v1.zip",
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
    ],
    "raw": [
        "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip",
    ],
}

# Published sha256 of each extracted file (see shared/data/SOURCES.md).
SHA256 = {
    "wiki.train.tokens": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    "wiki.valid.tokens": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "wiki.test.tokens": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    "wiki.train.raw": "6707892fa3788b5ab9ed78ab5ff37d9fe825f6011a2ad4fcd6a6d467f0e7da57",
    "wiki.valid.raw": "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7",
    "wiki.test.raw": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
}


def relpath(variant: str, split: str) -> str:
    """'wikitext-2/wiki.train.tokens' and the like."""
    subdir, ext = VARIANTS[variant]
    return f"{subdir}/wiki.{split}{ext}"


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
            f"WikiText-2 file; it was left untouched. Delete or replace it, and it will be downloaded again."
        )
    return actual


def find_files(
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
    found = {s: p for s in splits if (p := _first_existing(dirs, relpath(variant, s)))}
    missing = [s for s in splits if s not in found]
    if missing:
        no_download = (None, ["  none: download=False"])
        dest, errors = _download(variant, missing, dirs, urls, sha256) if download else no_download
        if dest is None:
            raise GptlabFileNotFoundError(_missing_message(variant, missing, dirs, urls, errors))
        found.update((s, dest / relpath(variant, s)) for s in missing)
    return {s: (found[s], verify(found[s], sha256.get(found[s].name))) for s in splits}


def _download(
    variant: str, splits: list[str], dirs: Sequence[Path], urls: Sequence[str], sha256: Mapping[str, str | None]
) -> tuple[Path | None, list[str]]:
    """Try each URL in turn; return the directory the files went to (None if all failed) and the failures."""
    errors: list[str] = []
    try:
        dest = _first_writable(dirs)
    except OSError as e:
        return None, [f"  none: {e}"]
    for url in urls:
        try:
            _download_and_extract(url, variant, splits, dest, sha256)
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
    url: str, variant: str, splits: list[str], dest: Path, sha256: Mapping[str, str | None]
) -> None:
    """Download the zip at `url` into a temp file in `dest`, then extract and verify the files of `splits`."""
    log.info("Downloading %s into %s", url, dest)
    fd, tmp_zip = tempfile.mkstemp(dir=dest, prefix=".download-", suffix=".zip.part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        with zipfile.ZipFile(tmp_zip) as zf:
            members = {Path(n).name: n for n in zf.namelist()}
            for split in splits:
                target = dest / relpath(variant, split)
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
    variant: str, splits: list[str], dirs: Sequence[Path], urls: Sequence[str], errors: list[str]
) -> str:
    subdir, ext = VARIANTS[variant]
    archive = "wikitext-2-v1.zip" if variant == "tokens" else "wikitext-2-raw-v1.zip"
    wanted = "\n".join(f"  {d / relpath(variant, s)}" for s in splits for d in dirs[:1])
    looked = ", ".join(str(d / subdir) for d in dirs)
    tried = "\n".join(errors) or "  none: no URLs given"
    return (
        f"WikiText-2 ({variant}) split(s) {', '.join(splits)} not found (looked in {looked}).\n"
        f"Download attempts:\n{tried}\n"
        f"Put the files from {archive} ({', '.join(urls) or 'no URLs given'}) at:\n{wanted}\n"
        f"or set GPTLAB_DATA_DIR (or data_dir) to a directory that contains {subdir}/wiki.{{train,valid,test}}{ext}."
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
