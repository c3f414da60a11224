"""Resumable, verified HTTP downloads (standard library only: ``urllib``).

Downloads go to ``<file>.part`` and resume with an HTTP ``Range`` request after an
interruption; only a complete file with the right size and SHA-256 is renamed into place (a wrong
checksum deletes the partial file). Google Drive's "can't scan for viruses" page is followed.
"""

import html
import http.client
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prnet.core.files import CHUNK, remove_empty_folders, sha256_file
from prnet.errors import DownloadError

USER_AGENT = "prnet-tf2-downloader/0.1 (+urllib)"


@dataclass(frozen=True)
class RemoteFile:
    """One pinned file: its name on disk, expected size (bytes) and SHA-256, and where it lives.

    ``repo_path`` / ``commit``: its path in the PRNet repository and the commit it is fetched at
    (``master`` is tried second). ``gdrive_id``: a Google Drive file id instead.
    """

    name: str
    size: int
    sha256: str
    repo_path: str = ""
    commit: str = ""
    gdrive_id: str = ""


# --------------------------------------------------------------------------- HTTP

def _describe(error) -> str:
    """A short human reason for a network failure."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = getattr(error, "reason", error)
    if isinstance(reason, socket.gaierror):
        return f"host not found ({reason}); are you offline or behind a proxy?"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    return f"{type(reason).__name__}: {reason}"


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def gdrive_confirm_url(page: str, page_url: str):
    """Given Google Drive's "can't scan this file for viruses" HTML page, return the URL that
    confirms the download, or None if the page has no such form/link (quota exceeded, removed)."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"(.*?)</form>', page, re.S) or \
        re.search(r'<form[^>]*action="([^"]+)"(.*?)</form>', page, re.S)
    if form:
        action = urllib.parse.urljoin(page_url, html.unescape(form.group(1)))
        inputs = re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2))
        if inputs:
            query = urllib.parse.urlencode([(n, html.unescape(v)) for n, v in inputs])
            return f"{action}{'&' if '?' in action else '?'}{query}"
    link = re.search(r'href="([^"]*confirm=[^"]+)"', page)
    if link:
        return urllib.parse.urljoin(page_url, html.unescape(link.group(1)))
    return None


def _is_html(response) -> bool:
    return "text/html" in (response.headers.get("Content-Type") or "").lower()


def _open_following_gdrive(url: str, offset: int, timeout: float, gdrive: bool):
    """Open ``url`` (with a Range from ``offset``); for Google Drive, go through the confirm page."""
    response = _open(url, offset, timeout)
    if gdrive and _is_html(response):
        page = response.read(2 << 20).decode("utf-8", "replace")
        response.close()
        confirm = gdrive_confirm_url(page, response.geturl())
        if confirm is None:
            raise DownloadError("Google Drive returned a web page instead of the file (download quota "
                                "exceeded, or the file moved)")
        response = _open(confirm, offset, timeout)
        if _is_html(response):
            response.close()
            raise DownloadError("Google Drive still returned a web page after confirming the download")
    return response


def _fetch(url: str, part: Path, timeout: float, gdrive: bool, progress: bool, desc: str):
    """Append ``url``'s bytes to ``part`` (resuming from its size). Raises on any failure."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open_following_gdrive(url, offset, timeout, gdrive)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to fetch: the partial file may be complete
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if offset and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise DownloadError(f"server answered the resume request with an unexpected range: {content_range!r}")
            mode = "ab"
        else:  # 200: the server ignored Range; start over
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        with open(part, mode) as f, tqdm(total=None if expected is None else offset + expected, initial=offset,
                                         unit="B", unit_scale=True, desc=desc, disable=not progress,
                                         leave=False) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except http.client.IncompleteRead as e:
                    f.write(e.partial)
                    received += len(e.partial)
                    break
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
        if expected is not None and received < expected:
            raise DownloadError(f"transfer interrupted after {offset + received:,} of {offset + expected:,} bytes")


def download_file(urls, dest, sha256: str = None, size: int = None, *, gdrive: bool = False,
                  timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``dest`` from the first of ``urls`` that works, resumably and verified.

    Bytes go to ``<dest>.part``; an interrupted transfer keeps it and the next call resumes
    with ``Range: bytes=<size>-``. A complete file whose size or SHA-256 differs from the
    expected one is deleted and :class:`DownloadError` is raised. If ``dest`` already exists
    with the right checksum nothing is fetched. Returns ``dest``.
    """
    dest = Path(dest)
    urls = [urls] if isinstance(urls, str) else list(urls)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    created = [p for p in (dest.parent, *dest.parent.parents) if not os.path.lexists(p)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _download_into(urls, dest, sha256, size, gdrive=gdrive, timeout=timeout, progress=progress)
    except BaseException:
        remove_empty_folders(created)  # a failed first download leaves no empty cache folders behind
        raise


def _download_into(urls, dest: Path, sha256, size, *, gdrive: bool, timeout: float, progress: bool) -> Path:
    """:func:`download_file` once ``dest``'s folder exists."""
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            _fetch(url, part, timeout, gdrive, progress, dest.name)
        except (urllib.error.URLError, OSError, http.client.HTTPException, DownloadError) as e:
            reason = str(e) if isinstance(e, DownloadError) else _describe(e)
            errors.append(f"{url}: {reason}")
            continue
        actual_size = part.stat().st_size if part.exists() else 0
        if size is not None and actual_size > size:
            part.unlink()
            errors.append(f"{url}: got {actual_size:,} bytes, expected {size:,}; partial file deleted")
            continue
        if size is not None and actual_size < size:
            errors.append(f"{url}: got {actual_size:,} of {size:,} bytes")
            continue
        if sha256 is not None:
            actual = sha256_file(part)
            if actual != sha256:
                part.unlink()
                errors.append(f"{url}: checksum mismatch: sha256 {actual}, expected {sha256}; the corrupt "
                              "download was deleted")
                continue
        os.replace(part, dest)
        return dest
    if part.exists():
        errors.append(f"the partial download ({part.stat().st_size:,} bytes) is kept at {part} and resumed "
                      "next time")
    elif any("checksum mismatch" in e for e in errors):
        errors.append("try again, or fetch the file manually and check it with `prnet-convert --verify`")
    raise DownloadError(f"could not download {dest.name}:\n  " + "\n  ".join(errors))
