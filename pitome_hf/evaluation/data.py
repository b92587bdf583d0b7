"""The data `pitome-hf evaluate` reads: `DataSpec` (where the data is, which split and columns) and `load_data` (a
`datasets.Dataset` with its columns checked), from a datasets Hub id, a local folder (imagefolder layout or parquet
files), a .parquet/.csv/.json file, or a .npz with `images`, `labels` and `classes` arrays (the embedded default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from pitome_hf.paths import DEFAULT_DATASET


@dataclass
class DataSpec:
    """Where the data is and which columns to read. `path`: a datasets Hub id, a local folder (imagefolder layout or
    parquet files), a .parquet/.csv/.json file, or a .npz with `images`, `labels` and `classes` arrays."""

    path: Optional[str] = None
    split: Optional[str] = None  # of a Hub id or a folder (None: "test"); a single file holds one split
    image_column: Optional[str] = None  # None: the task's default ("image")
    label_column: Optional[str] = None  # class label (classification) or answers (vqa); None: the task's default
    text_column: Optional[str] = None  # captions (retrieval) or questions (vqa); None: the task's default

    @property
    def split_name(self) -> str:
        return self.split or "test"

    def columns(self, defaults: dict[str, str]) -> dict[str, str]:
        """{role: column} for the roles a task reads, with this spec's choices over the task's defaults."""
        chosen = {"image": self.image_column, "label": self.label_column, "text": self.text_column}
        return {role: chosen[role] or default for role, default in defaults.items()}


def _dataset_from_npz(path: Path):
    """A dataset from a .npz with `images` (N, H, W[, C] uint8), `labels` (N integers) and optionally `classes`."""
    import datasets
    import zipfile

    from PIL import Image

    try:
        arrays = np.load(path, allow_pickle=False)
        files = list(arrays.files) if isinstance(arrays, np.lib.npyio.NpzFile) else None
        if files is not None and {"images", "labels"} <= set(files):
            images, labels = arrays["images"], arrays["labels"]
            names = [str(c) for c in arrays["classes"]] if "classes" in files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path} is not a valid .npz file (numpy cannot read it: {type(error).__name__}); it must "
                         "hold the arrays images, labels and optionally classes.") from None
    if files is None:
        raise ValueError(f"{path} is not a valid .npz file: it holds a single array (a .npy), not the named arrays "
                         "images and labels.")
    if not {"images", "labels"} <= set(files):
        lacking = sorted({"images", "labels"} - set(files))
        raise ValueError(f"{path} lacks the arrays {lacking}; it has {sorted(files)}.")
    if images.ndim not in (3, 4) or images.dtype != np.uint8 or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(f"{path}: images must be uint8 (N, H, W) or (N, H, W, C) and labels (N,); got images "
                         f"{images.dtype} {images.shape} and labels {labels.dtype} {labels.shape}.")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise ValueError(f"{path}: labels must be integer class ids; got {labels.dtype} values such as {labels[:3]}.")
    labels = labels.astype(np.int64)
    feature = datasets.Value("int64")
    if names:
        bad = labels[(labels < 0) | (labels >= len(names))]
        if bad.size:  # ClassLabel would refuse it with a long message: name the first one
            raise ValueError(f"{path}: label {int(bad[0])} at row {int(np.flatnonzero(labels == bad[0])[0])} is not "
                             f"a class id: {len(names)} classes are named, so labels must be 0..{len(names) - 1}.")
        feature = datasets.ClassLabel(names=names)
    features = datasets.Features({"image": datasets.Image(), "label": feature})
    pil = [Image.fromarray(a) for a in images]
    return datasets.Dataset.from_dict({"image": pil, "label": labels.tolist()}, features=features)


DATA_FILE_KINDS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or Path(name).suffix in (
        *DATA_FILE_KINDS, ".npz")


def _load_folder(path: Path, split: str):
    """A local folder: its parquet files (those of `split` when the file names carry split names, else all of them),
    or an imagefolder layout."""
    import datasets
    from datasets.data_files import get_data_patterns

    parquet = sorted(p for p in path.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))
    if not parquet:
        return datasets.load_dataset("imagefolder", data_dir=str(path), split=split)
    patterns = get_data_patterns(str(path))
    if list(map(str, patterns)) == ["train"] and list(patterns.values())[0] == ["**"]:  # no split names: all files
        return datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train")
    return datasets.load_dataset("parquet", data_dir=str(path), split=split)


def _load_any(spec: DataSpec, path: Path):
    import datasets

    if path.is_file() and spec.split is not None:
        raise ValueError(f"--split {spec.split}: {path} is a single file, which holds one split; drop --split (it "
                         "applies to Hub ids and folders).")
    if path.suffix == ".npz" and path.is_file():
        return _dataset_from_npz(path)
    if path.is_dir():
        return _load_folder(path, spec.split_name)
    if path.is_file() and path.suffix in DATA_FILE_KINDS:
        return datasets.load_dataset(DATA_FILE_KINDS[path.suffix], data_files=str(path), split="train")
    if path.exists():
        raise ValueError(f"--dataset {path} is a file evaluate cannot read: give a folder (imagefolder or parquet), a "
                         f"{', '.join(DATA_FILE_KINDS)} or .npz file, or a datasets Hub id.")
    if _looks_like_path(str(spec.path)):
        raise FileNotFoundError(f"--dataset {spec.path} does not exist (a local file or folder was meant; a Hub "
                                "dataset id looks like org/name).")
    return datasets.load_dataset(str(spec.path), split=spec.split_name)


def _images_column(ds, column: str, root: Optional[Path]):
    """`ds` with `column` holding images: an Image column as it is; a column of file paths (relative to `root`, the
    table's folder) cast to images; anything else is refused."""
    import datasets

    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        return ds
    if isinstance(feature, datasets.Value) and "string" in feature.dtype:
        if root is not None:
            ds = ds.map(lambda row: {column: str(root / row[column]) if row[column] and "://" not in row[column]
                                     else row[column]})
        return ds.cast_column(column, datasets.Image())
    raise ValueError(f"the image column {column!r} holds {feature}, not images: pass --image-column with the column "
                     "of images (or of image file paths).")


def load_data(spec: DataSpec, columns: Optional[dict] = None):
    """A `datasets.Dataset` for the spec, with its columns ({role: name}, default image and label) checked: each one
    exists, the image column holds images (file paths are read relative to the table's folder), the split has rows."""
    path = Path(spec.path).expanduser() if spec.path else DEFAULT_DATASET
    try:
        ds = _load_any(spec, path)
    except ValueError as error:
        if str(error).startswith("Unknown split"):
            raise ValueError(f"--split {spec.split_name}: {' '.join(str(error).split())} (for {path}).") from None
        if "corresponds to no data" in str(error):  # datasets' words for a folder without images of that split
            raise ValueError(f"--dataset {path} holds no images or parquet files for the split "
                             f"{spec.split_name!r}.") from None
        raise
    except PermissionError as error:
        raise PermissionError(f"--dataset {path} cannot be read ({error.strerror}: {error.filename}).") from None
    for role, column in (columns or spec.columns({"image": "image", "label": "label"})).items():
        if column not in ds.column_names:
            raise ValueError(
                f"the dataset has no {role} column {column!r}; its columns are {ds.column_names}. "
                f"Pass --{role}-column with one of them."
            )
        if role == "image":
            ds = _images_column(ds, column, (path if path.is_dir() else path.parent) if path.exists() else None)
    if len(ds) == 0:
        where = f"{spec.path or path}" + ("" if path.is_file() else f" (split {spec.split_name})")
        raise ValueError(f"the dataset {where} has no rows: nothing to evaluate.")
    return ds
