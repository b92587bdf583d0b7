"""Shared test helpers: the tiny configurations the per-family tests build on (declared once), and running code in a
fresh Python process where pitome_hf cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

# Blocks `import pitome_hf` (and its submodules) so remote code is the only way to get the classes.
BLOCK_PITOME = "import sys\nsys.modules['pitome_hf'] = None\n"


def run_fresh(code: str, tmp_path, env: dict | None = None, timeout: int = 240) -> dict:
    """Run `code` in a fresh interpreter with an empty HF_HOME, offline, without pitome_hf; the code must print one
    JSON object on its last line, which is returned."""
    home = tmp_path / "hf_home"
    home.mkdir(exist_ok=True)
    full_env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_PITOME + textwrap.dedent(code)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Tiny stock configurations, one per family the per-family tests build directly (the contract suite's are in
# contract_fixtures.py). ViT: a ViT-B/16-shaped token layout (224 px, patch 16 -> 196 patches, 12 layers), tiny width.
TINY = {
    "vit": dict(hidden_size=32, num_hidden_layers=12, num_attention_heads=2, intermediate_size=64, image_size=224,
                patch_size=16, num_labels=5),
    "bert": dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, num_labels=3),
}


def tiny_kwargs(family: str, **overrides) -> dict:
    """The tiny configuration of `family` without dropout, with `overrides`."""
    return {**TINY[family], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **overrides}


def with_attn(model, attn: str):
    """Switch a model (and every sub-config) to the attention implementation `attn`; returns the model."""
    model.config._attn_implementation = attn
    for module in model.modules():
        if hasattr(module, "config") and hasattr(module.config, "_attn_implementation"):
            module.config._attn_implementation = attn
    return model


def word_tokenizer(special: dict, words: int = 50, padding_side: str = "left"):
    """An offline word-level fast tokenizer: <pad> <bos> <eos> <unk>, w0..w{words-1}, and the `special` tokens
    (token -> id), split on white space."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(words)])}
    vocab.update(special)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                padding_side=padding_side, additional_special_tokens=list(special))


def without_video_processor(make):
    """`make()` with transformers' processor argument check relaxed to accept video_processor=None: no torchvision
    here, so the stock video processors of Qwen2.5-VL and LLaVA-OneVision cannot be built."""
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class
    ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: None if arg is None else check(self, name, arg)
    try:
        return make()
    finally:
        ProcessorMixin.check_argument_for_proper_class = check


def prefill_positions(model):
    """Record the position ids a vision-language model's language model is first called with (the prefill):
    (a dict that gets "position_ids", the hook handle to remove)."""
    seen = {}

    def hook(module, args, kwargs):
        seen.setdefault("position_ids", kwargs["position_ids"])

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
