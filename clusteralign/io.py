"""Atomic file and folder writes: a reader never sees a half-written artifact under its final name."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

# torch is imported where it is used: the Snakefile imports the dataset entries, which import
# this module, and torch would add two seconds to every Snakemake start (each job's too).
if TYPE_CHECKING:
    import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # On disk before the rename: after a node crash the name holds the old file or the
        # new one, never an empty one (a checkpoint that cannot be read cannot be resumed).
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; artifacts should be as readable as any file the user writes.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_failure(path: str | os.PathLike, err: OSError) -> str:
    """Why `path` could not be written, in words about `path` rather than a temporary file's."""
    for folder in Path(os.path.abspath(path)).parents:
        if folder.exists():
            # mkdir says "File exists" for a folder path blocked by a file.
            return f"{folder} is not a folder" if not folder.is_dir() else (err.strerror or str(err))
    return err.strerror or str(err)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_path` left beside `path` in a process that was killed.

    Only for a caller that is the one writer of `path` (a workflow job and its outputs, a
    training stage and its checkpoint); returns what was deleted.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for p in path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically; the same object gives the same bytes."""
    import torch

    with atomic_path(path) as tmp:
        # Through a file object: given a path, torch names the archive's folder after the
        # (random) temporary file, so equal weights would give different bytes and hashes.
        with open(tmp, "wb") as f:
            torch.save(obj, f)


class UnreadableFileError(ValueError):
    """A file that torch cannot load, or that does not hold what the caller reads from it."""

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


def torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True: checkpoints never execute pickled code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            # Not a pickle of objects at all (a text file, say): torch's safe unpickler stops at the first byte.
            raise UnreadableFileError(f"{path}: not a readable torch file, perhaps truncated or of another format "
                                      "(neither a torch archive nor a pickle of tensors)") from None
        raise UnreadableFileError(
            f"{path}: holds pickled Python objects (such as a whole saved model), which weights_only=True "
            f"refuses to run; save the model's state_dict() instead ({str(err).splitlines()[0]})", path
        ) from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, AttributeError, IndexError) as err:
        raise UnreadableFileError(
            f"{path}: not a readable torch file, perhaps truncated or of another format "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no message'})", path
        ) from None


def torch_load_mapping(path: str | os.PathLike, keys: tuple[str, ...], what: str,
                       map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch_load` of a file that must hold a dict with `keys`; `what` names the kind of file in errors."""
    obj = torch_load(path, map_location)
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        found = f"keys {', '.join(map(str, obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise UnreadableFileError(f"{path}: not {what} (expected keys {', '.join(keys)}; found {found})", path)
    return obj


def install_folder(tmp: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Rename the finished folder ``tmp`` to ``dest``, swapping out (and deleting) a non-empty ``dest``.

    The caller decides that ``dest`` may be replaced. Readers see either the old or the new
    folder under ``dest``, never a half-written one. Raises ``OSError`` when ``dest`` appears
    (non-empty) while this runs, e.g. made by a concurrent process.
    """
    tmp, dest = Path(tmp), Path(dest)
    if dest.is_dir() and any(dest.iterdir()):
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, trash / dest.name)
        try:
            os.replace(tmp, dest)
        except OSError:
            os.replace(trash / dest.name, dest)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
        return
    os.replace(tmp, dest)  # also succeeds onto an empty folder


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
