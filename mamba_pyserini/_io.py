"""File input and output: strict line reading for every reader, and atomic writing (outputs appear whole or not at
all)."""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False):
    """A temporary directory beside ``path`` that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        built = Path(tmp) / "out"
        built.mkdir()
        yield built
        if path.exists():
            shutil.rmtree(path)
        os.replace(built, path)


BOM = "\ufeff"
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number, line without its line end) of a UTF-8 text file, gzip-compressed where the name ends in ``.gz``.

    The one strictness of every reader: a byte-order mark on the first line is dropped, and invalid UTF-8 or a broken
    gzip stream raise ValueError naming the file and the line."""
    path = str(path)
    lineno = 0
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                     f"{e.start + 1})") from None
                yield lineno, (line[1:] if lineno == 1 and line.startswith(BOM) else line).rstrip("\r\n")
    except GZIP_ERRORS as e:
        raise ValueError(f"{path}:{lineno + 1}: broken gzip data ({one_line(e)})") from None


def first_seen(seen: dict, key, lineno: int, path, what: str) -> None:
    """Record ``key`` at ``lineno``; a key seen before is refused with both line numbers."""
    first = seen.setdefault(key, lineno)
    if first != lineno:
        raise ValueError(f"{path}:{lineno}: {what} {key!r} appears twice (lines {first} and {lineno})")


def one_line(e: BaseException) -> str:
    """An exception's message on one line (at most 500 characters)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:500]


def check_writable(path: str | os.PathLike, directory: bool = False) -> None:
    """Refuse, before any work, an output file (or ``directory``) that cannot be made or written."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        raise ValueError(f"cannot write {path}: it is {'not ' if directory else ''}a directory")
    ancestor = path if directory and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {ancestor} is not a directory")
    try:
        tempfile.TemporaryFile(dir=ancestor).close()
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {ancestor} is not writable ({one_line(e)})") from None


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The tensors of a safetensors file (the only weight format read); a truncated or corrupt file is a ValueError
    naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device=device)
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({one_line(e)})") from None
