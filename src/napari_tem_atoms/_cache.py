"""Where fetched files (sample data, model weights) are cached, and how they are fetched."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import TEMAtomsError

__all__ = ["CACHE_ENV", "cache_dir", "fetch_file"]

#: Environment variable that moves the cache (e.g. to a shared or offline-prepared folder).
CACHE_ENV = "NAPARI_TEM_ATOMS_CACHE"


def cache_dir(kind: str = "") -> Path:
    """The cache folder for `kind` (``"samples"``, ``"models"``), created on demand.

    The root is ``$NAPARI_TEM_ATOMS_CACHE`` when set, else the user cache folder of the
    operating system (e.g. ``~/.cache/napari-tem-atoms`` on Linux).
    """
    import pooch

    root = os.environ.get(CACHE_ENV) or pooch.os_cache("napari-tem-atoms")
    folder = Path(root).expanduser() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fetch_file(url: str, sha256: str, filename: str, kind: str) -> Path:
    """Return the cached copy of `url`, downloading it first if needed; check its SHA-256.

    Parameters
    ----------
    url : str
        Where the file is published.
    sha256 : str
        Its SHA-256 in hexadecimal. A file whose hash differs is refused.
    filename : str
        Name of the file in the cache.
    kind : str
        Sub-folder of the cache (``"samples"``, ``"models"``).

    Returns
    -------
    pathlib.Path
        The verified local file.

    Raises
    ------
    TEMAtomsError
        When the download fails (the message says where to put the file by hand) or the
        hash does not match.

    """
    import pooch

    folder = cache_dir(kind)
    try:
        return Path(pooch.retrieve(url=url, known_hash=f"sha256:{sha256}", fname=filename,
                                   path=folder, progressbar=False))
    except ValueError as exc:
        if "hash" in str(exc).lower():
            raise TEMAtomsError(
                f"{filename}: its SHA-256 does not match the published one ({sha256[:12]}...):"
                " the download is damaged or the file was replaced; it was not used"
            ) from exc
        raise
    except Exception as exc:  # requests' connection errors, HTTP errors, OSError
        raise TEMAtomsError(
            f"{filename} could not be downloaded from {url} ({type(exc).__name__}: {exc}). "
            f"On a computer without internet access, download it elsewhere and put it at "
            f"{folder / filename} (or set {CACHE_ENV} to a folder that holds it)."
        ) from exc
