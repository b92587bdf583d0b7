"""PiToMe Space: PiToMe's merge map beside ToMe's, on one image, and what each buys.

Pick an image (or an example), a model by name, the merging methods to compare (PiToMe and ToMe by default,
PiToMe-BSM offered) and a keep ratio. One event runs the unmerged model and every ticked method at the same keep
ratio; each method gets its own merge map (after the layer you pick) and figures: measured latency, analytic GFLOPs
(pitome_hf.flops), tokens left, and top-5 predictions (classifiers) or feature fidelity (backbones). The page opens
on the first example already compared (computed once at start-up).

    make demo                                   # local, http://127.0.0.1:7860
    PITOME_SPACE_MODEL="My ViT=DIR_OR_HUB_ID" python spaces/app.py

This file is the UI only: the models offered and their names are in catalog.py, the per-family handlers in
handlers.py (chosen by the registry's `Family.space_view`), the comparison and its rendering in analysis.py.
Visitors see display names only: no host path reaches the page, the API or a message (see catalog.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import gradio as gr

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as `python spaces/app.py`, imported by path (tests), or on a Space
    sys.path.insert(0, str(HERE))

try:
    import pitome_hf  # noqa: F401  (registers the PiToMe classes with the transformers Auto factories)
except ImportError as error:  # pragma: no cover: an environment problem, said plainly
    raise SystemExit(
        f"pitome_hf cannot be imported ({error}). In the repository run `make demo`; on a Space, requirements.txt "
        "installs the project's wheel (see spaces/README.md, 'Deploying to a Space')."
    ) from None

import analysis  # noqa: E402
import catalog  # noqa: E402
import handlers  # noqa: E402
from analysis import BASE_NAME, DEFAULT_METHODS, LATENCY_REPEATS, MAX_PIXELS, METHODS  # noqa: E402
from handlers import InputError  # noqa: E402
from pitome_hf.modeling.merge_config import protected_prefix  # noqa: E402

for _module in (analysis, catalog, handlers):  # another module of the same name, earlier on sys.path, would shadow
    if Path(_module.__file__).resolve().parent != HERE:
        raise SystemExit(f"spaces/{_module.__name__}.py is shadowed by {_module.__name__} from another package.")

log = logging.getLogger("pitome_space")
EXAMPLES_DIR = HERE / "examples"
DEFAULT_KEEP_RATIO = 0.9
QUEUE_CONCURRENCY = 2  # events run at once (the Space's CPU has 2 cores)
QUEUE_MAX_SIZE = 32  # waiting events beyond this are refused by the queue
THUMBNAIL = 64  # px: example thumbnails, inlined in the page (no file path in the page config)


# ----------------------------------------------------------------------------------------------------------------
# Components that check and explain
# ----------------------------------------------------------------------------------------------------------------
def checked_by_handler(component):
    """Let a value that the component would refuse or cannot convert (a string for a slider, an unknown name for the
    model dropdown, sent through the API) reach the handler unchanged, so the handler answers with its own readable
    message (for a model: the names offered) instead of Gradio's generic error."""
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except Exception:  # noqa: BLE001: the handler validates and explains
            return payload

    component.preprocess = preprocess
    return component


def cached_file(data: bytes, name: str) -> str:
    """`data` written into gradio's cache under its content hash, once, by rename (never rewritten in place, so a
    concurrent event serving the same file never reads it half-written). Returns the file's path."""
    target = Path(gr.utils.get_upload_folder()) / hashlib.sha256(data).hexdigest() / name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(partial, target)
    return str(target)


def png_file(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return cached_file(buffer.getvalue(), "image.png")


def image_output(**kwargs) -> gr.Image:
    """A gr.Image output whose arrays are written to gradio's cache atomically (`cached_file`): gradio itself
    truncates and rewrites a content-hashed file on every call, so two concurrent events with the same image could
    serve a half-written file (seen as "Too little data for declared Content-Length")."""
    component = gr.Image(**kwargs)
    original = component.postprocess
    component.postprocess = lambda value: original(png_file(value) if isinstance(value, np.ndarray) else value)
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
            name = Path(str(getattr(payload, "orig_name", None) or "The upload")).name
            raise gr.Error(
                f"{name} is not an image this app can read: upload a PNG, JPEG, WebP, GIF, BMP or TIFF file.",
                print_exception=False,
            ) from None

    component.preprocess = preprocess
    return component


# ----------------------------------------------------------------------------------------------------------------
# Events (every exception a visitor can cause becomes a message without host paths)
# ----------------------------------------------------------------------------------------------------------------
def _user_error(error: Exception) -> gr.Error:
    return gr.Error(catalog.redact(str(error)), print_exception=False)


def _method_keys(method: str) -> tuple[str, ...]:
    return tuple(f"{method}:{part}" for part in ("show", "label", "md", "map"))


# the outputs of a comparison, in event order (per method: column shown, top-5, figures, merge map)
OUTPUT_KEYS = ("model_input", "base_label", "base_md", *(k for m in METHODS for k in _method_keys(m)), "caption",
               "plot")
API_KEYS = tuple(k for k in OUTPUT_KEYS if not k.endswith(":show"))  # what an API client gets (no layout updates)


def result_values(a: analysis.Analysis) -> dict:
    """What the page shows for one comparison, by output key (images as arrays, the plot as a figure)."""
    values = {
        "model_input": analysis.upscale(a.input_image),
        "base_label": a.base.scores or None,  # a backbone has no predictions: its label panels are hidden
        "base_md": analysis.side_markdown(a.base),
        "caption": analysis.map_caption(a),
        "plot": analysis.token_plot(a),
    }
    ran = {side.name: side for side in a.merged}
    for method in METHODS:
        side = ran.get(method)
        show, label, md, merge_map = _method_keys(method)
        values[show] = side is not None
        values[label] = (side.scores or None) if side else None
        values[md] = analysis.side_markdown(side, a.base, a.layer) if side else ""
        values[merge_map] = analysis.merge_map_image(a.input_image, side.token_map, a.grid) if side else None
    return values


def _run(image, model_name, methods, keep_ratio, layer) -> dict:
    try:
        return result_values(analysis.analyse(image, model_name, methods, keep_ratio, layer))
    except InputError as error:
        raise _user_error(error) from None
    except Exception as error:  # noqa: BLE001: never show a stack trace; the log keeps it
        log.exception("compare failed")
        message = catalog.redact(f"{type(error).__name__}: {error}")
        raise gr.Error(f"Something went wrong while running the model: {message}"[:500]) from None


def compare(image, model_name, methods, keep_ratio, layer):
    """The main event: the unmerged model and every ticked method at one keep ratio. Returns the OUTPUT_KEYS values:
    model input, top-5 and figures of the unmerged model; per method in METHODS (its column shown or hidden, its top-5,
    figures and merge map); the caption of the maps; the token plot."""
    values = _run(image, model_name, methods, keep_ratio, layer)
    return tuple(gr.update(visible=values[k]) if k.endswith(":show") else values[k] for k in OUTPUT_KEYS)


def describe_model(offer: catalog.Offer, loaded: handlers.LoadedModel) -> str:
    gh, gw = loaded.grid
    prefix = protected_prefix(loaded.model.config)
    text = (
        f"**{offer.name}**: {loaded.num_layers} layers, {loaded.image_size[0]}x{loaded.image_size[1]} px input, "
        f"patch {loaded.patch_size[0]}, {gh * gw} patches ({gh}x{gw}) + "
        f"{'CLS' if prefix == 1 else f'{prefix} protected tokens'}; {loaded.handler.describe(loaded)}."
    )
    onnx = loaded.onnx_note
    return text + (f" {offer.note}." if offer.note else "") + (f" {onnx}." if onnx else "")


def model_info(model_name, layer=0):
    """Describe the model; fit the layer slider to its depth; show the top-5 panels only for a model with a head:
    (markdown, slider, then the visibility of the unmerged and of each method's top-5 panel)."""
    keep = (gr.update(),) * (2 + len(METHODS))
    try:
        offer = catalog.resolve(model_name)
        loaded = catalog.get_model(offer.name)
    except Exception as error:  # noqa: BLE001: an unknown name or a broken model: a message, never a traceback
        if not isinstance(error, InputError):
            log.exception("model_info failed")
        message = catalog.redact(str(error))
        gr.Warning(message)
        return (f"**Model not loaded:** {message}", *keep)
    try:
        current = int(layer)
    except (TypeError, ValueError):
        current = 0
    layers = loaded.num_layers
    head = gr.update(visible=loaded.handler.has_head)
    return (describe_model(offer, loaded), gr.update(maximum=layers - 1, value=min(max(current, 0), layers - 1)),
            *(head,) * (1 + len(METHODS)))


# ----------------------------------------------------------------------------------------------------------------
# Examples, and the first view (the first example, compared once at start-up)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    file: str
    title: str
    model: str  # a display name
    methods: tuple = DEFAULT_METHODS
    keep_ratio: float = DEFAULT_KEEP_RATIO
    layer: int = 3  # layers <= 3 fit every model offered


def examples() -> list[Example]:
    """The photos on the default model; the Fashion-MNIST ankle boot on the embedded Fashion-MNIST classifier when
    the Space offers it (else on the default)."""
    offered = catalog.offers()
    default = offered[0].name
    boot = next((o.name for o in offered if o.note == catalog.EMBEDDED_NOTE), default)
    rows = [
        Example("chelsea.jpg", "Chelsea the cat", default),
        Example("astronaut.jpg", "Astronaut (Eileen Collins)", default, keep_ratio=0.8),
        Example("coffee.jpg", "Coffee", default, (*DEFAULT_METHODS, "PiToMe-BSM"), layer=2),
        Example("ankle_boot.png", "Ankle boot (Fashion-MNIST)", boot),
    ]
    return [e for e in rows if (EXAMPLES_DIR / e.file).is_file()]


def example_image(example: Example) -> str:
    """The example's file as gradio serves it: a copy in gradio's cache (the checkout's path is never sent)."""
    return cached_file((EXAMPLES_DIR / example.file).read_bytes(), example.file)


def thumbnail_html(example: Example) -> str:
    """An example cell: the image as an inline thumbnail (a data URL) and its title."""
    with Image.open(EXAMPLES_DIR / example.file) as image:
        thumb = analysis.to_rgb(image)
        thumb.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<div style="display:flex;align-items:center;gap:8px"><img src="data:image/jpeg;base64,{data}" '
            f'alt="{example.title}" style="height:{THUMBNAIL}px;border-radius:4px"/><span>{example.title}</span></div>')


def example_inputs(example: Example) -> tuple:
    return example_image(example), example.model, list(example.methods), example.keep_ratio, example.layer


@dataclass
class FirstView:
    """The page as it opens: the first example's inputs and its comparison, computed once at start-up."""

    inputs: tuple = (None, None, list(DEFAULT_METHODS), DEFAULT_KEEP_RATIO, 3)
    values: dict = field(default_factory=dict)  # OUTPUT_KEYS -> initial value (images as cached files)
    info: str = ""  # the model panel
    layers: int = 12
    has_head: bool = True
    seconds: float = 0.0  # what computing it cost at start-up


def first_view() -> tuple[list[Example], FirstView]:
    """The examples, and the first one compared, once: what the page opens on. Its cost (`seconds`) includes finding
    the default model (the one-time conversion of the offline DINOv2 included) and loading it. A failure (no default
    model, say) leaves an empty page that says why."""
    start = time.perf_counter()
    rows, view = [], FirstView()
    try:
        rows = examples()
        offer = catalog.resolve(rows[0].model if rows else None)
        if rows:
            view.inputs = example_inputs(rows[0])
            values = _run(*view.inputs)
            view.values = {k: png_file(v) if isinstance(v, np.ndarray) else v for k, v in values.items()}
        loaded = catalog.get_model(offer.name)
        view.info = describe_model(offer, loaded)
        view.layers, view.has_head = loaded.num_layers, loaded.handler.has_head
    except Exception as error:  # noqa: BLE001: the page still opens, and says why it is empty
        log.exception("the first view could not be computed")
        view.info = f"**Model not loaded:** {catalog.redact(getattr(error, 'message', None) or error)}"
    view.seconds = time.perf_counter() - start
    log.info("first view computed in %.1f s", view.seconds)
    return rows, view


# ----------------------------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------------------------
DESCRIPTION = """\
# PiToMe beside ToMe: what token merging merges, and what it buys
[PiToMe](https://arxiv.org/abs/2405.16148) (NeurIPS 2024) merges similar tokens between the layers of a vision
Transformer and protects isolated (informative) ones by an energy score; [ToMe](https://arxiv.org/abs/2210.09461) is
the baseline. Every ticked method runs on the same image at the same keep ratio: each merge map shows which patches
have become one token after the layer you choose, next to the unmerged model. A backbone (such as the DINOv2
default) has no predictions: its merged sides say how close their features stay to the unmerged model's instead.
"""


def _input_panel(view: FirstView) -> dict:
    """The visitor's inputs and the Compare button, with the first example's values."""
    image_value, model_value, methods_value, ratio_value, layer_value = view.inputs
    c = {}
    with gr.Row():
        with gr.Column(scale=2):
            c["image"] = image_input(type="filepath", image_mode=None, label="Image", value=image_value,
                                     sources=["upload", "clipboard"], height=260, elem_id="input-image")
        with gr.Column(scale=3):
            c["model"] = checked_by_handler(gr.Dropdown(
                choices=catalog.offer_names(), value=model_value, allow_custom_value=False,
                label="Model (the ones this Space offers)", elem_id="model"))
            c["model_md"] = gr.Markdown(view.info, elem_id="model-info")
            c["methods"] = checked_by_handler(gr.CheckboxGroup(
                list(METHODS), value=methods_value, label="Merging methods, compared side by side", elem_id="methods"))
            with gr.Row():
                c["keep_ratio"] = checked_by_handler(gr.Slider(
                    0.0, 1.0, value=ratio_value, step=0.01, elem_id="keep-ratio",
                    label="Keep ratio: fraction of tokens each layer keeps, in (0, 1]"))
                c["layer"] = checked_by_handler(gr.Slider(
                    0, view.layers - 1, value=min(layer_value, view.layers - 1), step=1,
                    label="Merge maps after layer", elem_id="layer"))
            c["run"] = gr.Button("Compare", variant="primary", elem_id="compare-btn")
    return c


def _result_panel(view: FirstView) -> dict:
    """A column for the unmerged model, then one per method (shown when ticked), the caption and the token plot."""
    v = view.values.get
    c = {}
    with gr.Row(equal_height=False):
        with gr.Column(min_width=240):
            gr.Markdown(f"### {BASE_NAME}")
            c["model_input"] = image_output(label="Model input (resized)", value=v("model_input"), type="numpy",
                                            format="png", interactive=False, elem_id="model-input", height=300)
            c["base_label"] = gr.Label(v("base_label"), num_top_classes=5, label=f"Top-5 ({BASE_NAME})",
                                       elem_id="base-label", visible=view.has_head)
            c["base_md"] = gr.Markdown(v("base_md", ""), elem_id="base-stats")
        for method in METHODS:
            show, label, md, merge_map = _method_keys(method)
            slug = METHODS[method].replace("_", "-")
            with gr.Column(min_width=240, visible=bool(v(show, method in view.inputs[2]))) as c[show]:
                gr.Markdown(f"### {method}")
                c[merge_map] = image_output(label=f"Merge map: {method}", value=v(merge_map), type="numpy",
                                            format="png", interactive=False, elem_id=f"merge-map-{slug}", height=300)
                c[label] = gr.Label(v(label), num_top_classes=5, label=f"Top-5 ({method})", elem_id=f"label-{slug}",
                                    visible=view.has_head)
                c[md] = gr.Markdown(v(md, ""), elem_id=f"stats-{slug}")
    c["caption"] = gr.Markdown(v("caption", ""), elem_id="map-caption")
    c["plot"] = gr.Plot(v("plot"), label="Patch tokens after each layer (CLS not counted)", format="png",
                        elem_id="token-plot")
    return c


def _example_table(rows: list[Example]) -> gr.Dataset:
    """The examples: thumbnails inlined as data URLs, models by display name (no file path in any cell)."""
    return gr.Dataset(
        components=[gr.HTML(render=False), gr.Textbox(render=False), gr.CheckboxGroup(list(METHODS), render=False),
                    gr.Number(render=False), gr.Number(render=False)],
        samples=[[thumbnail_html(e), e.model, list(e.methods), e.keep_ratio, e.layer] for e in rows],
        headers=["Image", "Model", "Methods", "Keep ratio", "Layer"], type="index", elem_id="examples",
        label="Examples (click one: it runs at once)", samples_per_page=10)


def _wire(c: dict, table: gr.Dataset, rows: list[Example]) -> None:
    inputs = [c["image"], c["model"], c["methods"], c["keep_ratio"], c["layer"]]
    outputs = [c[k] for k in OUTPUT_KEYS]
    c["run"].click(compare, inputs=inputs, outputs=outputs, api_name="compare", concurrency_id="compare")

    def pick(index):
        if not isinstance(index, int) or not 0 <= index < len(rows):
            raise gr.Error(f"Example {index!r} does not exist: pick one of the {len(rows)} in the table.")
        return example_inputs(rows[index])

    table.click(pick, inputs=table, outputs=inputs, api_visibility="private").success(
        compare, inputs=inputs, outputs=outputs, api_visibility="private", concurrency_id="compare")
    c["model"].change(model_info, inputs=[c["model"], c["layer"]], api_name="model_info",
                      outputs=[c["model_md"], c["layer"], c["base_label"], *(c[f"{m}:label"] for m in METHODS)])


def build_demo() -> gr.Blocks:
    rows, view = first_view()
    with gr.Blocks(title="PiToMe token merging") as demo:
        gr.Markdown(DESCRIPTION)
        c = _input_panel(view)
        c.update(_result_panel(view))
        table = _example_table(rows)
        gr.Markdown(
            "Latency is measured here on a shared CPU (batch 1, median of "
            f"{LATENCY_REPEATS}); GFLOPs are counted analytically by `pitome_hf.flops`. Example photos: scikit-image "
            "sample data (public domain / CC0); the ankle boot is from Fashion-MNIST (MIT)."
        )
        _wire(c, table, rows)
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    demo.first_view = view  # what the page opens on, and its start-up cost (seconds)
    return demo


def share_cores() -> None:
    """QUEUE_CONCURRENCY events run at once: share the cores between them instead of oversubscribing (measured on 2
    busy cores: a tiny ViT ran 7x slower with 2 intra-op threads per event than with 1)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // QUEUE_CONCURRENCY))


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # says what the first view cost
    share_cores()  # before the first view is measured, so its latencies are measured as the events' are
demo = build_demo()


def main() -> None:
    # On a Space the platform sets GRADIO_SERVER_NAME (0.0.0.0); locally this listens on loopback only.
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )


if __name__ == "__main__":
    main()
