"""Fingerprints: hashes of everything an evaluation row depends on (the model's files, the dataset's files, the code
that ran it), so that the journal reuses a row only for the same inputs and push can tell which model a report is of.

Each file is read once: its sha256 is kept in a cache file (`cache_path`: $PITOME_HF_CACHE/file_hashes.json, else
$XDG_CACHE_HOME/pitome_hf or ~/.cache/pitome_hf) against the file's identity (resolved path, size, mtime_ns, inode,
device, ctime_ns), so an unchanged folder is fingerprinted without reading its weights again. Any write to a file
changes its ctime, which no program can set back (os.utime resets mtime only), and a file replaced by a rename has
another inode, so a changed file is always read again; a file whose ctime or mtime is within RACY_NS of the moment it
was looked at is never cached (it may be changed again within the timestamps' granularity, as git's "racy" entries).
A file in the Hugging Face cache (a snapshots/ link to blobs/<sha256>, as LFS files are stored) is not read at all:
its blob name is its sha256. The fingerprints are the same values as without the cache: sha256 over (name, sha256 of
the content) of each file, in name order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch

from pitome_hf.evaluation.data import DataSpec
from pitome_hf.paths import DEFAULT_DATASET

MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".py", ".txt", ".model", ".jinja", ".tiktoken")


CACHE_FILE = "file_hashes.json"
CACHE_VERSION = 1
RACY_NS = 2_000_000_000  # a file changed less than 2 s before it was looked at is hashed again next time
_SHA256_BLOB = re.compile(r"^[0-9a-f]{64}$")


def cache_path() -> Path:
    """Where the content hashes are kept: $PITOME_HF_CACHE/file_hashes.json, else the user cache folder's
    pitome_hf/file_hashes.json ($XDG_CACHE_HOME, else ~/.cache)."""
    root = os.environ.get("PITOME_HF_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pitome_hf"
    return Path(root).expanduser() / CACHE_FILE


def _read_cache(path: Path) -> dict:
    """{resolved path: {"id": identity, "sha256": hex}}; {} when the file is missing, unreadable or not a cache of
    this version (a corrupt cache is ignored, and replaced at the next write)."""
    try:
        data = json.loads(path.read_text())
        files = data["files"] if data.get("version") == CACHE_VERSION else {}
        return {k: v for k, v in files.items() if isinstance(v, dict) and isinstance(v.get("id"), list)
                and isinstance(v.get("sha256"), str)}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def _write_cache(path: Path, new: dict) -> None:
    """Merge `new` into the cache file and write it atomically (a temporary file renamed over it); entries of files
    that no longer exist are dropped. A cache that cannot be written is left alone: hashing stays correct, only
    slower."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files = {k: v for k, v in _read_cache(path).items() if os.path.exists(k)}  # another process's entries too
        files.update(new)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": CACHE_VERSION, "files": files}, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _identity(stat: os.stat_result) -> list:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev, stat.st_ctime_ns]


def hub_blob_sha256(path) -> bytes | None:
    """The sha256 of a file in the Hugging Face cache, read from its name: `path` resolves to
    <cache>/models--org--name/blobs/<sha256> (LFS files are stored under their sha256; small files under their git
    sha1, 40 digits, which is no sha256: None)."""
    real = Path(path).resolve()
    if real.parent.name == "blobs" and real.parent.parent.name.startswith(("models--", "datasets--", "spaces--")) \
            and _SHA256_BLOB.match(real.name):
        return bytes.fromhex(real.name)
    return None


def _content_sha256(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def file_sha256s(paths) -> list:
    """The sha256 digest (bytes) of each file in `paths`, each read at most once per identity (see the module's
    docstring): from the Hugging Face cache's blob name, else from the cache file, else read (and cached)."""
    cache_file = cache_path()
    cache, new, out = None, {}, []
    for path in paths:
        blob = hub_blob_sha256(path)
        if blob is not None:
            out.append(blob)
            continue
        real = str(Path(path).resolve())
        before = os.stat(real)
        looked_at = time.time_ns()
        identity = _identity(before)
        if cache is None:
            cache = _read_cache(cache_file)
        entry = cache.get(real)
        if entry is not None and entry["id"] == identity:
            out.append(bytes.fromhex(entry["sha256"]))
            continue
        digest = _content_sha256(Path(real))
        out.append(digest)
        settled = looked_at - max(before.st_mtime_ns, before.st_ctime_ns) >= RACY_NS
        if settled and _identity(os.stat(real)) == identity:  # unchanged while it was read
            new[real] = {"id": identity, "sha256": digest.hex()}
    if new:
        _write_cache(cache_file, new)
    return out


def files_digest(files) -> str:
    """sha256 over (name, sha256 of the content) of each (name, path) in `files`, in name order (each content hash
    read once, see `file_sha256s`)."""
    files = sorted(files)
    digest = hashlib.sha256()
    for (name, _), content in zip(files, file_sha256s(path for _, path in files)):
        digest.update(name.encode() + b"\0" + content)
    return "sha256:" + digest.hexdigest()


def model_folder(model: str) -> Path:
    """The folder a model's files are read from: the folder itself, or a Hub id's snapshot in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from transformers.utils import cached_file

    return Path(cached_file(str(model), "config.json")).parent


def model_fingerprint(model, weights_only: bool = False) -> str:
    """A hash of everything a model's results depend on: its config, weights, code and processor/tokenizer files
    (the top-level files with the suffixes in MODEL_FILE_SUFFIXES; README.md and hidden files excluded). With
    `weights_only`, of the weight files alone (*.safetensors, *.bin and their index)."""
    folder = model_folder(str(model))
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix in
             MODEL_FILE_SUFFIXES]
    if weights_only:
        files = [p for p in files if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    return files_digest((p.name, p) for p in files)


def dataset_fingerprint(spec: DataSpec, ds) -> str:
    """A hash of a local dataset's files (a file, or every file under a folder but hidden ones), else the datasets
    library's fingerprint of what it loaded from the Hub cache."""
    path = Path(spec.path).expanduser() if spec.path else DEFAULT_DATASET
    if path.is_file():
        return files_digest([("", path)])  # the content alone: a renamed copy is the same data
    if path.is_dir():
        names = {str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file()}
        return files_digest((name, p) for name, p in names.items() if not any(
            part.startswith(".") for part in Path(name).parts))
    return f"datasets:{ds._fingerprint}"


def code_fingerprint() -> str:
    """A hash of the code the rows depend on besides the model's own files: every .py file of the installed pitome_hf
    and of its modeling package (the merge code a stock checkpoint is run with, the task runners), and the torch and
    transformers versions. A row measured by other code is measured again, not reused."""
    import transformers

    import pitome_hf
    # pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
    import pitome_hf.modeling

    names = {}  # named inside the package, wherever it is installed (the modeling folder sits apart when editable)
    for root, prefix in ((Path(pitome_hf.__file__).parent, "pitome_hf"),
                         (Path(pitome_hf.modeling.__file__).parent, "pitome_hf/modeling")):
        for p in root.rglob("*.py"):
            if "__pycache__" not in p.parts:
                names[p.resolve()] = f"{prefix}/{p.relative_to(root).as_posix()}"
    digest = files_digest((name, path) for path, name in names.items())
    return f"{digest} torch {torch.__version__} transformers {transformers.__version__}"
