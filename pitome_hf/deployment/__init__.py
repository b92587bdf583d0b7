"""Deploying PiToMe models outside eager PyTorch (ONNX export and ONNX Runtime: `onnx.py`)."""
