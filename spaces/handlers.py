"""How the Space loads, runs and counts each kind of model: one handler per view.

Which view a checkpoint gets is a fact of its family, kept in the family registry: `pitome_hf.families.Family
.space_view` ("classifier" for ViT / DeiT, "backbone" for DINOv2). `HANDLERS` maps that view name to its handler
here; a family whose view has no handler (or none at all) is refused with a message naming what is supported. A CLIP
zero-shot view would be one more handler (its preprocess would also take candidate labels) plus `space_view` on the
clip family.

No gradio here: the UI (app.py) wraps these.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from PIL import Image

from pitome_hf.families import FAMILIES, family_of
from pitome_hf.modeling.merge_config import protected_prefix

VARIANT_CACHE_SIZE = 16  # merged views of one loaded model (they share its weights)


class InputError(ValueError):
    """A problem with what the visitor gave (image, ratio, layer, model): shown to them as a message."""


class LRUCache:
    """A small thread-safe LRU cache; concurrent misses on one key build it once."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def _hit(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return True, self._items[key]
            return False, self._key_locks.setdefault(key, threading.Lock())

    def get(self, key, build: Callable[[], object]):
        found, value = self._hit(key)
        if found:
            return value
        with value:  # this key's lock: one build per key at a time
            found, cached = self._hit(key)
            if found:
                return cached
            value = build()
            with self._lock:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclass
class LoadedModel:
    """A loaded checkpoint with merging off, and what the app needs to know about it."""

    source: str  # where it was loaded from (a Hub id or a host folder): never shown to a visitor
    handler: "SpaceHandler"
    model: torch.nn.Module
    processor: object
    num_layers: int
    patch_size: tuple[int, int]
    image_size: tuple[int, int]
    # merged views of `model` (sharing its weights), per settings; dropped with the model when it leaves the cache
    variants: LRUCache = field(default_factory=lambda: LRUCache(VARIANT_CACHE_SIZE), repr=False)
    onnx_note: str = ""  # the model panel's sentence on an exported model.onnx (catalog.onnx_note, found at load)

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]


@dataclass
class ForwardResult:
    scores: dict[str, float]  # label -> probability, top-5 (empty for a backbone without a head)
    token_map: Optional[torch.Tensor]  # (N0,) with the protected prefix first, when traced
    token_counts: list[int]  # mergeable tokens entering layer 0, then after each layer
    num_prefix: int
    features: Optional[torch.Tensor] = None  # (C,) a backbone's pooled (CLS) feature


def _fixed_size_pixels(loaded: LoadedModel, image: Image.Image) -> dict:
    pixels = loaded.processor(images=image, return_tensors="pt")["pixel_values"]
    if tuple(pixels.shape[-2:]) != loaded.image_size:
        raise InputError(
            f"The model's image processor gives {tuple(pixels.shape[-2:])} px inputs but the model expects "
            f"{loaded.image_size}: this checkpoint's processor does not match its config."
        )
    return {"pixel_values": pixels}


def _merge_trace(out) -> tuple[Optional[torch.Tensor], list[int]]:
    token_map = out.token_map[0] if out.token_map is not None else None
    counts = [int(c) for c in out.token_counts] if out.token_counts is not None else []
    return token_map, counts


class SpaceHandler:
    """How the app loads, runs and counts one view of a model family. Subclass and add to HANDLERS."""

    view = "base"  # the value of Family.space_view this handler serves
    task = ""
    has_head = True  # shows top-5 predictions; a backbone shows feature fidelity instead

    def load(self, source: str) -> LoadedModel:
        raise NotImplementedError

    def preprocess(self, loaded: LoadedModel, image: Image.Image) -> dict:
        return _fixed_size_pixels(loaded, image)

    def run(self, model, inputs: dict):
        """The bare model forward (what the latency measures)."""
        return model(**inputs)

    def forward(self, model, inputs: dict) -> ForwardResult:
        """Forward plus post-processing: scores, token map and counts."""
        raise NotImplementedError

    def gflops(self, loaded: LoadedModel, model) -> float:
        """Analytic GFLOPs of one image through `model` (the loaded model or a merged view of it)."""
        return family_of(model.config).flops(model.config) / 1e9

    def describe(self, loaded: LoadedModel) -> str:
        """What the model info box says after the shape (task, head)."""
        return self.task

    def pixel_values(self, inputs: dict) -> torch.Tensor:
        return inputs["pixel_values"]


class ClassifierHandler(SpaceHandler):
    """ViT / DeiT image classifiers, stock or PiToMe checkpoints (pitome_hf.evaluation.tasks.load_classifier)."""

    view = "classifier"
    task = "image-classification"

    def load(self, source: str) -> LoadedModel:
        from pitome_hf.evaluation.tasks import load_classifier

        model, processor = load_classifier(source)
        model.eval()
        config = model.config
        return LoadedModel(source=source, handler=self, model=model, processor=processor,
                           num_layers=config.num_hidden_layers, patch_size=_pair(config.patch_size),
                           image_size=_pair(config.image_size))

    def forward(self, model, inputs: dict) -> ForwardResult:
        out = self.run(model, inputs)
        probs = out.logits[0].float().softmax(-1)
        top = probs.topk(min(5, probs.numel()))
        names = model.config.id2label
        scores = {str(names.get(int(i), int(i))): float(p) for p, i in zip(top.values, top.indices)}
        token_map, counts = _merge_trace(out)
        return ForwardResult(scores, token_map, counts, protected_prefix(model.config))

    def describe(self, loaded: LoadedModel) -> str:
        return f"{self.task}, {loaded.model.config.num_labels} classes"


class BackboneHandler(SpaceHandler):
    """DINOv2 backbones (with or without registers), stock or PiToMe checkpoints. No classification head: the app
    shows how close the merged model's pooled (CLS) feature stays to the unmerged one's (cosine)."""

    view = "backbone"
    task = "DINOv2 image backbone (no classification head)"
    has_head = False

    def load(self, source: str) -> LoadedModel:
        from transformers import AutoImageProcessor, PretrainedConfig

        from pitome_hf.modeling import PiToMeDinov2Model, PiToMeDinov2WithRegistersModel

        config_dict, _ = PretrainedConfig.get_config_dict(source)
        registers = "with_registers" in str(config_dict.get("model_type"))
        cls = PiToMeDinov2WithRegistersModel if registers else PiToMeDinov2Model
        model = cls.from_pretrained(source, merge_method="none").eval()
        processor = AutoImageProcessor.from_pretrained(source)
        crop = getattr(processor, "crop_size", None) or {}
        size = (crop["height"], crop["width"]) if "height" in crop else _pair(model.config.image_size)
        return LoadedModel(source=source, handler=self, model=model, processor=processor,
                           num_layers=model.config.num_hidden_layers, patch_size=_pair(model.config.patch_size),
                           image_size=size)

    def preprocess(self, loaded: LoadedModel, image: Image.Image) -> dict:
        pixels = loaded.processor(images=image, return_tensors="pt")["pixel_values"]
        if tuple(pixels.shape[-2:]) != loaded.image_size:
            raise InputError(f"The model's image processor gives {tuple(pixels.shape[-2:])} px inputs, not the "
                             f"{loaded.image_size} it crops to: this checkpoint's processor is not a fixed-size crop.")
        return {"pixel_values": pixels}

    def forward(self, model, inputs: dict) -> ForwardResult:
        out = self.run(model, inputs)
        token_map, counts = _merge_trace(out)
        return ForwardResult({}, token_map, counts, protected_prefix(model.config), out.pooler_output[0].float())

    def gflops(self, loaded: LoadedModel, model) -> float:
        return family_of(model.config).flops(model.config, image_size=loaded.image_size[0]) / 1e9

    def describe(self, loaded: LoadedModel) -> str:
        return f"{self.task}: the merged sides show the cosine of their pooled (CLS) feature to the unmerged model's"


# Family.space_view -> its handler
HANDLERS: dict[str, SpaceHandler] = {h.view: h for h in (ClassifierHandler(), BackboneHandler())}


def supported_families() -> list[str]:
    """Registry families the Space can show, with their view: ["vit (classifier)", "dinov2 (backbone)"]."""
    return [f"{f.name} ({f.space_view})" for f in FAMILIES if f.space_view in HANDLERS]


def handler_for(config_dict: dict, name: str) -> SpaceHandler:
    """The handler of a checkpoint's family (by its config's model_type), or InputError naming what is supported."""
    model_type = config_dict.get("model_type")
    try:
        view = family_of(str(model_type)).space_view
    except ValueError:
        view = None
    handler = HANDLERS.get(view)
    if handler is None:
        raise InputError(f"The model {name!r} is a {model_type!r} model; this Space supports "
                         f"{', '.join(supported_families())} checkpoints.")
    return handler
