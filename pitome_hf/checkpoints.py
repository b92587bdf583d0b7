"""Checkpoint folders on disk, shared by every command that reads or writes one (convert, export, evaluate, push,
the ONNX deployment): resolving a base (folder or Hub id), loading every weight or nothing, the tokenizer and
processor files a checkpoint carries, the one rule of --output and --force (`check_output`, `OutputKind`), and the
staging every write goes through (`staged_folder`, `staging_path`, `remove_stale_staging`), so that a failure never
leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import transformers

from pitome_hf.families import pitome_model_types

# Files that make up a checkpoint's tokenizer / processor; copied as they are, never re-created.
PREPROCESSING_FILES = (
    "preprocessor_config.json", "processor_config.json", "image_processor_config.json", "video_preprocessor_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
    "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.json",
    "chat_template.jinja",
)


def resolve_base(base: str) -> tuple[str, bool]:
    """(base, is_local). An existing path is a local folder and must hold config.json; a string that looks like a path
    (starts with . / ~ or has more than one '/') but does not exist is refused; anything else is a Hub id."""
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{base} is not a model folder: it has no config.json.")
        return str(path), True
    if base.startswith((".", "/", "~")) or base.count("/") > 1 or "\\" in base:
        raise FileNotFoundError(f"{base} does not exist (a local folder was meant; a Hub id looks like org/name).")
    return base, False


def processor_parts(processor_class: type, base: str) -> Optional[dict]:
    """The sub-processors `processor_class` takes (tokenizer, image processor, and e.g. Qwen2.5-VL's video processor),
    loaded from `base`; None when the base has no tokenizer or image processor to build one from. A sub-processor
    this machine cannot build (Qwen2.5-VL's video processor needs torchvision) is refused, naming it (ValueError):
    transformers builds no Qwen2.5-VL processor without one."""
    from transformers.processing_utils import MODALITY_TO_AUTOPROCESSOR_MAPPING

    try:
        parts = {"tokenizer": transformers.AutoTokenizer.from_pretrained(base),
                 "image_processor": transformers.AutoImageProcessor.from_pretrained(base)}
    except Exception:  # the base has no tokenizer or image processor: there is nothing to build one from
        return None
    for name in processor_class.get_attributes():
        if name not in parts:
            try:
                parts[name] = MODALITY_TO_AUTOPROCESSOR_MAPPING[name].from_pretrained(base)  # e.g. AutoVideoProcessor
            except ImportError as error:
                why = " ".join(str(error).split()).split(". ")[0]
                raise ValueError(f"{processor_class.__name__} needs {base}'s {name}, which cannot be built on this "
                                 f"machine ({why}): install it and run again. Nothing was written.") from None
    return parts


def copy_preprocessing(base: str, local: bool, folder: Path, skip=frozenset()) -> list[str]:
    """Copy the base's tokenizer / processor files next to the model (except `skip`, already written); returns the
    names copied (maybe none)."""
    if local:
        sources = [Path(base) / name for name in PREPROCESSING_FILES if (Path(base) / name).is_file()]
    else:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(base, allow_patterns=list(PREPROCESSING_FILES)))
        sources = [snapshot / name for name in PREPROCESSING_FILES if (snapshot / name).is_file()]
    sources = [s for s in sources if s.name not in skip]
    for source in sources:
        shutil.copy2(source, folder / source.name)
    return [s.name for s in sources]


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name: a Hub repo id (convert's base, push's target)
_STAGING = re.compile(r"^\.(?P<name>.+)\.(partial|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_LIVE_STAGING: set = set()  # staging paths this process is writing now (not stale, though they carry our pid)


@contextlib.contextmanager
def staging_path(output: Path, kind: str = "partial", tag: Optional[str] = None):
    """The hidden sibling a file or folder `output` is written under while this block runs (`.NAME.partial-PID-HEX`;
    `kind="old"` for an earlier output while it is replaced): the one spelling `remove_stale_staging` recognises.
    Creates nothing; stale staging of dead processes beside `output` is removed first."""
    remove_stale_staging(output)
    path = output.parent / f".{output.name}.{kind}-{tag or f'{os.getpid()}-{uuid.uuid4().hex[:8]}'}"
    _LIVE_STAGING.add(str(path))
    try:
        yield path
    finally:
        _LIVE_STAGING.discard(str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()  # our own pid: a leftover of an earlier process that had it (a live one is registered)


def remove_stale_staging(output: Path) -> None:
    """Remove the staging files and folders (see `staging_path`) that an earlier, killed run writing `output` left:
    those whose process is gone. A convert or export folder, or an `export_onnx` file alike."""
    if not output.parent.is_dir():
        return
    for entry in output.parent.iterdir():
        match = _STAGING.match(entry.name)
        if not match or match["name"] != output.name or str(entry) in _LIVE_STAGING or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class OutputKind:
    """What a command writes to its --output folder, the one rule of `--force`: only a folder that this command wrote
    is replaced. `what` names such a folder; `foreign(folder)` says why an existing, non-empty folder is not one (a
    phrase), or None when it is one."""

    what: str
    foreign: Callable[[Path], Optional[str]]


def _not_a_checkpoint(folder: Path) -> Optional[str]:
    """Why `folder` is not a PiToMe checkpoint folder (config.json with a PiToMe model_type, and weights), or None."""
    path = folder / "config.json"
    if not path.is_file():
        return "it has no config.json"
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return "its config.json is not a config object"
    if model_type not in pitome_model_types():
        return f"its config.json holds a {model_type!r} model, not a PiToMe one"
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        return "it holds no weights (*.safetensors), which convert always writes (an export folder?)"
    return None


CHECKPOINT_OUTPUT = OutputKind("a PiToMe checkpoint folder (as `pitome-hf convert` writes)", _not_a_checkpoint)


def check_output(output, local_base: Optional[str], force: bool, kind: OutputKind = CHECKPOINT_OUTPUT) -> Path:
    """The resolved folder to write, after refusing every --output that would destroy or corrupt something else:
    an empty name, a symbolic link, a file, the input checkpoint itself, a folder inside it or holding it, the current
    folder or one holding it, an existing non-empty folder without `force`, and (even with `force`) a non-empty folder
    that the command did not write (`kind`: what it writes; convert's is a PiToMe checkpoint folder).
    `local_base`: the input folder (None for a Hub id)."""
    if not str(output).strip():
        raise ValueError("--output is empty: name the folder to write.")
    given = Path(output).expanduser()
    if given.is_symlink():
        raise ValueError(f"--output {given} is a symbolic link (to {os.readlink(given)}); give the real folder's path "
                         "instead. Nothing was written.")
    target = given.resolve()
    if target.exists() and not target.is_dir():
        raise ValueError(f"--output {given} exists and is a file; choose a folder name for --output.")
    if local_base is not None:
        source = Path(local_base).resolve()
        relation = ("is the input checkpoint" if target == source else "is inside the input checkpoint"
                    if source in target.parents else "contains the input checkpoint" if target in source.parents
                    else None)
        if relation:
            raise ValueError(f"--output {given} {relation} {local_base}: writing it would replace or delete the input. "
                             "Choose an --output outside it (--force does not change this).")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ValueError(f"--output {given} is the current folder or holds it ({cwd}): choose a new folder's name.")
    if target.exists() and any(target.iterdir()):
        foreign = kind.foreign(target)
        if foreign:
            raise ValueError(f"--output {given} exists and is not empty, and is not {kind.what}: {foreign}. --force "
                             "replaces only such a folder; choose another --output, or move its files away yourself.")
        if not force:
            raise ValueError(f"--output {given} exists and is not empty ({kind.what}); pass force=True (--force) to "
                             "replace it.")
    parent = _nearest_existing(target.parent)
    if not parent.is_dir():
        raise ValueError(f"--output {given} cannot be written: {parent} is a file, not a folder. Nothing was written.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--output {given} cannot be written: {parent} is not writable. Nothing was written.")
    return target


def load_cleanly(model_class, base: str, **settings):
    """`model_class.from_pretrained(base, **settings)`, refused (ValueError, nothing written) when any weight is
    missing, unexpected or mismatched: a model with random weights must never be written or measured; a weights file
    that cannot be read is named (RuntimeError)."""
    try:
        model, info = model_class.from_pretrained(base, output_loading_info=True, **settings)
    except Exception as error:
        bad = _unreadable_weights(base)
        if bad is None:
            raise
        raise RuntimeError(f"{bad[0]} cannot be read ({bad[1]}): a truncated or corrupt weights file; replace it "
                           "with the checkpoint's own. Nothing was written.") from None
    problems = {k: sorted(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
    if problems:
        raise ValueError(f"{base} did not load cleanly into {model_class.__name__}: {problems}. Nothing was written.")
    return model


def _unreadable_weights(base: str) -> Optional[tuple[str, str]]:
    """(path, why) of the first .safetensors file of the local folder `base` that safetensors cannot open, or None."""
    from safetensors import safe_open

    folder = Path(base).expanduser()
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
        try:
            with safe_open(str(path), framework="pt") as weights:
                for _ in weights.keys():
                    pass
        except Exception as error:
            return str(path), f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
    return None


@contextlib.contextmanager
def staged_folder(output: Path):
    """A hidden staging folder beside `output` to write into; when the block ends without an error it is renamed into
    place (an earlier `output` is replaced only then), on any error it is removed: nothing is ever half-written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with staging_path(output, "partial", tag) as staging, staging_path(output, "old", tag) as old:
        try:
            staging.mkdir()
            yield staging
            if output.exists():
                output.rename(old)
                staging.rename(output)
                shutil.rmtree(old)
            else:
                staging.rename(output)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
