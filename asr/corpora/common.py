"""What every corpus preparation shares: layout checks that name the first missing file,
parallel duration probing, and download + checksum + safe extraction of published archives."""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from asr.audio import audio_info
from asr.errors import AsrError

log = logging.getLogger(__name__)

# both ways to ask for a download: the CLI flag and the recipes' environment variable
DOWNLOAD_HINT = "or download it where a network exists: --download, or <CORPUS>_DOWNLOAD=1 for a recipe"


@dataclass(frozen=True)
class Archive:
    """A published archive of (part of) a corpus. ``sha256`` is None where the publisher gives
    none that we could record; the computed digest is then logged for the user to compare."""

    url: str
    sha256: str | None
    provides: str  # the path (relative to the download folder) that exists once it is extracted


def require(path: Path, layout: str) -> Path:
    """``path`` itself, or an error naming it and the layout the corpus expects."""
    if not path.exists():
        raise AsrError(f"{path}: not found; expected {layout}")
    return path


def durations(paths: Sequence[Path], desc: str) -> list[float]:
    """Durations in seconds of many audio files (headers only, a few threads: I/O bound)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(lambda p: audio_info(p)[1], paths)
        return list(tqdm(results, total=len(paths), desc=desc, leave=False, disable=None))


def ensure_downloaded(data_dir: Path, archives: Iterable[Archive], download: bool, layout: str) -> None:
    """Download and extract each archive whose ``provides`` path is missing under ``data_dir``
    when ``download`` is set; otherwise name the first missing path and the expected layout."""
    for archive in archives:
        target = data_dir / archive.provides
        if target.exists():
            continue
        if not download:
            raise AsrError(f"{target}: not found; expected {layout} ({DOWNLOAD_HINT})")
        fetch_and_extract(archive, data_dir)
        require(target, f"{archive.url} to contain {archive.provides}")


def fetch_and_extract(archive: Archive, dest: Path) -> None:
    """Stream ``archive.url`` to a temporary file while hashing it, check the SHA-256, and
    extract it under ``dest``. A failed or mismatching download leaves nothing behind."""
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=".download.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(archive.url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(archive.url).name, disable=None) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        found = digest.hexdigest()
        if archive.sha256 is None:
            log.warning("%s: no published checksum recorded here; its SHA-256 is %s", archive.url, found)
        elif found != archive.sha256:
            raise AsrError(f"{archive.url}: checksum mismatch (SHA-256 {found}, expected {archive.sha256}); download discarded")
        _extract(tmp, dest, archive.url)
    except OSError as exc:
        raise AsrError(f"{archive.url}: download failed ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _extract(path: Path, dest: Path, name: str) -> None:
    try:
        with tarfile.open(path) as tar:
            if hasattr(tarfile, "data_filter"):
                # "data" refuses absolute paths, links out of dest and device files (PEP 706)
                tar.extractall(dest, filter="data")
            else:  # Pythons before 3.11.4 without Debian's backport
                for member in tar.getmembers():
                    if member.name.startswith("/") or ".." in Path(member.name).parts or not (member.isfile() or member.isdir()):
                        raise AsrError(f"{name}: refusing to extract {member.name!r} (outside the folder or not a plain file)")
                tar.extractall(dest)
    except tarfile.TarError as exc:
        raise AsrError(f"{name}: not a readable tar archive ({exc})") from None


def convert_to_wav(source: Path, target: Path, read) -> Path:
    """Write ``read(source) -> (samples, rate)`` as 16-bit WAV at ``target`` unless it exists
    already; written under a temporary name first so an interrupted run leaves no half file."""
    import soundfile as sf

    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    samples, rate = read(source)
    tmp = target.with_name(f".{target.name}.tmp")
    sf.write(tmp, samples, rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, target)
    return target
