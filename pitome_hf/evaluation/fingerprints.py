"""Fingerprints: hashes of everything an evaluation row depends on (the model's files, the dataset's files, the code
that ran it), so that the journal reuses a row only for the same inputs and push can tell which model a report is of."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pitome_hf.evaluation.data import DataSpec
from pitome_hf.paths import DEFAULT_DATASET

MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".py", ".txt", ".model", ".jinja", ".tiktoken")


def files_digest(files) -> str:
    """sha256 over (name, sha256 of the content) of each (name, path) in `files`, in name order."""
    digest = hashlib.sha256()
    for name, path in sorted(files):
        with open(path, "rb") as f:
            digest.update(name.encode() + b"\0" + hashlib.file_digest(f, "sha256").digest())
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
