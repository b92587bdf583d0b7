"""The comparison behind the Space, without gradio: read the visitor's image, run the unmerged model and one merged
view per ticked method on it, and render what the page shows (merge maps, captions, figures, the token plot).

Every method runs at the same keep ratio and its merge map is taken after the same layer, so the maps differ only in
which tokens each method merges.
"""

from __future__ import annotations

import colorsys
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import catalog
from handlers import InputError, LoadedModel
from pitome_hf.apply import apply_pitome
from pitome_hf.modeling.merge_config import MERGE_FIELD

MIN_SIDE = 8  # px: smaller images are refused
MAX_SIDE = 4096  # px
MAX_PIXELS = 16_000_000  # 16 MP
# label shown -> merge_method (pitome_bsm: the authors' energy-ordered bipartite matching, see docs/algorithm.md)
METHODS = {"PiToMe": "pitome", "ToMe": "tome", "PiToMe-BSM": "pitome_bsm"}
DEFAULT_METHODS = ("PiToMe", "ToMe")
BASE_NAME = "No merging"
LATENCY_REPEATS = 5  # timed forwards per model and call (median reported), after one warm-up each
DISPLAY_SIZE = 448  # px: merge maps are upscaled (nearest) to about this size
PLOT_STYLES = {  # colour, line style, width, marker: lines of methods with one schedule coincide, so each stays visible
    BASE_NAME: ("#7f7f7f", "-", 2.0, ""),
    "PiToMe": ("#f97316", "-", 5.0, "o"),
    "ToMe": ("#2563eb", "--", 2.2, "s"),
    "PiToMe-BSM": ("#16a34a", ":", 2.2, "^"),
}


# ----------------------------------------------------------------------------------------------------------------
# The visitor's inputs
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


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        raise InputError(f"{path.name} is too large to open safely (over {MAX_PIXELS / 1e6:.0f} MP).") from None
    except (UnidentifiedImageError, OSError):
        raise InputError(
            f"{path.name} is not an image this app can read: upload a PNG, JPEG, WebP, GIF, BMP or TIFF file."
        ) from None


def load_image(source) -> Image.Image:
    """A path, array or PIL image -> an RGB PIL image, after the size checks. Raises InputError with a readable
    message (naming the upload's file name only)."""
    if source is None:
        raise InputError("No image: upload one or pick an example.")
    if isinstance(source, np.ndarray):
        source = Image.fromarray(source)
    image = source if isinstance(source, Image.Image) else _open(Path(source))
    check_size(*image.size)  # before decoding the pixels
    try:
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"The image could not be decoded ({catalog.redact(error)}); is the file truncated or "
                         "corrupt?") from None


def validate_keep_ratio(keep_ratio) -> float:
    try:
        value = float(keep_ratio)
    except (TypeError, ValueError):
        raise InputError(f"Keep ratio {keep_ratio!r} is not a number: choose a value in (0, 1].") from None
    try:  # the settings table's range check (NaN and inf fail it too)
        MERGE_FIELD["keep_ratio"].validate(value)
    except ValueError:
        raise InputError(
            f"Keep ratio {value:g} is out of range: it must be in (0, 1] (the fraction of tokens each layer keeps; "
            "1 merges nothing)."
        ) from None
    return value


def validate_methods(methods) -> list[str]:
    """The ticked methods (a list of names, or one name), in METHODS order; InputError for none, an unknown one, or
    anything but a name or a flat list of names (a nested list, a number, a mapping: sent through the API)."""
    allowed = ", ".join(METHODS)
    if methods is None or isinstance(methods, str):
        chosen = [methods] if methods else []
    elif isinstance(methods, (list, tuple)):
        chosen = list(methods)
    else:
        raise InputError(f"Methods must be a list of names, not a {type(methods).__name__}: choose from {allowed}.")
    for method in chosen:
        if not isinstance(method, str):
            raise InputError(f"Methods must be a flat list of names; got {str(method)[:40]} (a "
                             f"{type(method).__name__}) in it: choose from {allowed}.")
        if method not in METHODS:
            raise InputError(f"Method {method[:40]!r} is not supported: choose from {allowed}.")
    if not chosen:
        raise InputError(f"No merging method ticked: tick at least one of {', '.join(METHODS)}.")
    return [m for m in METHODS if m in chosen]


def validate_layer(layer, num_layers: int) -> int:
    try:
        value = int(round(float(layer)))
    except (TypeError, ValueError):
        raise InputError(f"Layer {layer!r} is not a number: choose 0..{num_layers - 1}.") from None
    if not 0 <= value < num_layers:
        raise InputError(f"Layer {value} is out of range: this model has {num_layers} layers (0..{num_layers - 1}).")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Running the models
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Side:
    """One model's results: predictions, measured latency, analytic GFLOPs, its token-count schedule and, for a
    merged model, its merge map after the chosen layer."""

    name: str
    scores: dict[str, float]
    latency_ms: float
    gflops: float
    token_counts: list[int]
    feature_cosine: Optional[float] = None  # backbones: cosine of the pooled feature to the unmerged model's
    token_map: Optional[np.ndarray] = None  # (gh * gw,) for each patch, the index of the token holding it


@dataclass
class Analysis:
    base: Side
    merged: list[Side]  # one per ticked method, in METHODS order
    keep_ratio: float
    layer: int
    num_layers: int
    grid: tuple[int, int]
    input_image: np.ndarray  # (H, W, 3) uint8: what the model sees, resized
    num_prefix: int

    def side(self, method: str) -> Side:
        return next(s for s in self.merged if s.name == method)


def merged_variant(loaded: LoadedModel, method: str, keep_ratio: float, trace: bool, layers: Optional[tuple]):
    """The model with merging on (weights shared with `loaded.model`), cached per settings on `loaded`."""
    key = (method, keep_ratio, trace, layers)

    def build():
        settings = dict(merge_method=method, keep_ratio=keep_ratio, trace_source=trace)
        if layers is not None:
            settings["merge_layers"] = list(layers)
        return apply_pitome(loaded.model, **settings).eval()

    return loaded.variants.get(key, build)


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


def median_latencies(loaded: LoadedModel, models: dict, inputs: dict) -> dict[str, float]:
    """Median ms of the bare forward of each model, timed interleaved (round by round) so that a busy moment of a
    shared CPU hits every model alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(LATENCY_REPEATS):
        for name, model in models.items():
            times[name].append(_time_ms(lambda: loaded.handler.run(model, inputs)))
    return {name: statistics.median(t) for name, t in times.items()}


def map_after(loaded: LoadedModel, method_key: str, ratio: float, layer: int, inputs: dict) -> tuple[np.ndarray, int]:
    """(token map of the patches after `layer`, number of protected prefix tokens): a traced view merging only in
    layers 0..layer, whose final map is the map after `layer`."""
    mapper = merged_variant(loaded, method_key, ratio, trace=True, layers=tuple(range(layer + 1)))
    out = loaded.handler.forward(mapper, inputs)
    prefix = out.num_prefix
    return (out.token_map[prefix:] - prefix).cpu().numpy(), prefix


def _cosine(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[float]:
    if a is None or b is None:
        return None
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@torch.inference_mode()
def analyse(image, model_name: Optional[str], methods, keep_ratio, layer) -> Analysis:
    """Run the unmerged model and each ticked method's merged view on one image, at one keep ratio, with each merge
    map taken after `layer`. Raises InputError for anything the visitor should fix."""
    names = validate_methods(methods)
    ratio = validate_keep_ratio(keep_ratio)
    rgb = load_image(image)
    loaded = catalog.get_model(model_name)
    layer = validate_layer(layer, loaded.num_layers)
    handler = loaded.handler
    inputs = handler.preprocess(loaded, rgb)
    models = {BASE_NAME: loaded.model}
    models.update({n: merged_variant(loaded, METHODS[n], ratio, trace=False, layers=None) for n in names})
    outs = {n: handler.forward(m, inputs) for n, m in models.items()}  # doubles as the latency warm-up
    latency = median_latencies(loaded, models, inputs)
    base = outs[BASE_NAME]
    sides = [Side(BASE_NAME, base.scores, latency[BASE_NAME], handler.gflops(loaded, loaded.model), base.token_counts)]
    prefix = base.num_prefix
    for n in names:
        token_map, prefix = map_after(loaded, METHODS[n], ratio, layer, inputs)
        sides.append(Side(n, outs[n].scores, latency[n], handler.gflops(loaded, models[n]), outs[n].token_counts,
                          _cosine(base.features, outs[n].features), token_map))
    return Analysis(base=sides[0], merged=sides[1:], keep_ratio=ratio, layer=layer, num_layers=loaded.num_layers,
                    grid=loaded.grid, input_image=visible_input(loaded, handler.pixel_values(inputs)),
                    num_prefix=prefix)


# ----------------------------------------------------------------------------------------------------------------
# Merge maps
# ----------------------------------------------------------------------------------------------------------------
def group_colours(n: int) -> np.ndarray:
    """n well-separated saturated colours (golden-ratio hue steps), uint8 (n, 3)."""
    out = np.zeros((n, 3), dtype=np.float64)
    for i in range(n):
        hue = (0.58 + i * 0.618033988749895) % 1.0
        sat = 0.85 if i % 2 == 0 else 0.65
        out[i] = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return (out * 255).round().astype(np.uint8)


def upscale(image: np.ndarray, display: int = DISPLAY_SIZE) -> np.ndarray:
    scale = max(1, round(display / max(image.shape[:2])))
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def _draw_borders(img: np.ndarray, tokens: np.ndarray, ph: int, pw: int, line: int) -> None:
    gh, gw = tokens.shape
    dark = np.array([20.0, 20.0, 20.0])
    for r in range(gh):
        for c in range(gw):
            if c + 1 < gw and tokens[r, c] != tokens[r, c + 1]:
                img[r * ph:(r + 1) * ph, (c + 1) * pw - line:(c + 1) * pw + line] = dark
            if r + 1 < gh and tokens[r, c] != tokens[r + 1, c]:
                img[(r + 1) * ph - line:(r + 1) * ph + line, c * pw:(c + 1) * pw] = dark


def merge_map_image(input_image: np.ndarray, token_map: np.ndarray, grid: tuple[int, int],
                    display: int = DISPLAY_SIZE) -> np.ndarray:
    """Overlay of the merge on the model's input image, upscaled (nearest) to about `display` px.

    Patches merged into the same token share a colour (blended 60 % over the pixels); patches still alone keep their
    own pixels; dark lines separate patches held by different tokens."""
    gh, gw = grid
    H, W, _ = input_image.shape
    scale = max(1, round(display / max(H, W)))
    img = upscale(input_image, display).astype(np.float64)
    ph, pw = (H // gh) * scale, (W // gw) * scale
    tokens = token_map.reshape(gh, gw)
    ids, counts = np.unique(tokens, return_counts=True)
    merged_ids = [t for t, c in sorted(zip(ids, counts), key=lambda tc: (-tc[1], tc[0])) if c > 1]
    colour_of = {int(t): colour for t, colour in zip(merged_ids, group_colours(len(merged_ids)))}
    for r in range(gh):
        for c in range(gw):
            colour = colour_of.get(int(tokens[r, c]))
            if colour is not None:
                block = img[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw]
                block[:] = 0.4 * block + 0.6 * colour
    _draw_borders(img, tokens, ph, pw, max(1, scale // 8))
    return img.clip(0, 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Texts and the token plot
# ----------------------------------------------------------------------------------------------------------------
def map_summary(side: Side, layer: int) -> str:
    """One line on a method's merge map: tokens holding the patches, merged groups, patches still alone."""
    counts = np.bincount(side.token_map)
    counts = counts[counts > 0]
    groups = counts[counts > 1]
    alone = int((counts == 1).sum())
    text = (f"**Merge map after layer {layer}:** {side.token_map.size} patches held by **{counts.size} tokens**; "
            f"{groups.size} merged tokens hold {int(groups.sum())} patches")
    text += f" (largest: {int(groups.max())})" if groups.size else ""
    return text + f", {alone} patches still alone"


def map_caption(a: Analysis) -> str:
    """How to read the merge maps, shared by every method."""
    gh, gw = a.grid
    methods = ", ".join(s.name for s in a.merged)
    prefix = "The CLS token is" if a.num_prefix == 1 else f"The {a.num_prefix} prefix tokens are"
    return (
        f"**Merge maps after layer {a.layer}** ({methods}; keep ratio {a.keep_ratio:g}): the model's input, "
        f"{gh * gw} patches ({gh}x{gw}), with every patch coloured by the token that absorbed it. Patches of one "
        f"colour are one token; patches still on their own keep their pixels; dark lines separate tokens. "
        f"{prefix} protected: never merged, not drawn. At one keep ratio every method keeps the same number of "
        f"tokens per layer; they differ in which patches they merge."
    )


def side_markdown(side: Side, base: Optional[Side] = None, layer: Optional[int] = None) -> str:
    final = side.token_counts[-1] if side.token_counts else "?"
    lines = [
        f"**Latency:** {side.latency_ms:.1f} ms (measured, batch 1, median of {LATENCY_REPEATS} runs)",
        f"**GFLOPs:** {side.gflops:.4g} (analytic, pitome_hf.flops)",
        f"**Tokens after the last layer:** {final}" + (f" of {side.token_counts[0]}" if side.token_counts else ""),
    ]
    if base is not None and side.latency_ms > 0 and side.gflops > 0:
        lines.append(
            f"**vs no merging:** {base.gflops / side.gflops:.2f}x fewer FLOPs, "
            f"{base.latency_ms / side.latency_ms:.2f}x speed (measured on this shared CPU; small models gain little)"
        )
    if side.feature_cosine is not None:
        lines.append(f"**Feature fidelity:** cosine {side.feature_cosine:.4f} of the pooled (CLS) feature to the "
                     "unmerged model's (1 = identical)")
    if side.token_map is not None and layer is not None:
        lines.append(map_summary(side, layer))
    return "  \n".join(lines)


def plot_steps(num_layers: int) -> list[str]:
    """x-axis categories of the token plot: the input, then after each layer."""
    return ["input", *(str(layer) for layer in range(num_layers))]


def token_plot_frame(a: Analysis):
    """Long-format frame: one row per (method, step) with the patch-token count."""
    import pandas as pd

    steps = plot_steps(a.num_layers)
    rows = []
    for side in (a.base, *a.merged):
        for step, count in zip(steps, side.token_counts):
            rows.append({"after layer": step, "tokens": int(count), "method": side.name})
    return pd.DataFrame(rows, columns=["after layer", "tokens", "method"])


def token_plot(a: Analysis):
    """A matplotlib figure: patch tokens after each layer, a line per method, a legend naming them. Lines of methods
    with one schedule coincide, so each has its own width, dash and marker and all stay visible."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    from matplotlib.figure import Figure

    frame = token_plot_frame(a)
    steps = plot_steps(a.num_layers)
    fig = Figure(figsize=(7.2, 2.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name, rows in frame.groupby("method", sort=False):
        colour, style, width, marker = PLOT_STYLES.get(name, ("#000000", "-", 1.5, ""))
        ax.plot(range(len(rows)), rows["tokens"], color=colour, linestyle=style, linewidth=width, marker=marker,
                markersize=5, label=name)
    ax.set_xticks(range(len(steps)), steps)
    ax.set_xlabel("after layer")
    ax.set_ylabel("patch tokens")
    ax.set_ylim(0, max(frame["tokens"]) * 1.08)
    ax.grid(alpha=0.3)
    ax.legend(title=f"keep ratio {a.keep_ratio:g}", loc="lower left", fontsize=8, title_fontsize=8, ncols=2)
    return fig
