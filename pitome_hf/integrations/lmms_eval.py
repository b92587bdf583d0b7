"""The lmms-eval plug-in: `lmms-eval --model pitome_<family> --model_args pretrained=FOLDER,visual_tokens=64,...`.

lmms-eval (0.7.x) finds models outside its own package through the entry-point group `lmms_eval.models`: setup.cfg
points it at `manifests`, which lists one `ModelManifest` per vision-language family of the registry that reduces
visual tokens at the language model's input (a PiToMe processor, and a config that reads `visual_tokens`: Qwen2.5-VL,
LLaVA-OneVision, and each such family added to pitome_hf/families.py later, with no edit here). The model name is
`pitome_` + the family's name; its class, `PiToMe_<family>`, is made on first use by this module's `__getattr__`.

`pretrained` is a converted folder (`pitome-hf convert`) or a stock checkpoint of the family (converted on load). The
other model_args that are not the harness's (`device`, `dtype`, `batch_size`, `max_new_tokens`, `system_prompt`) are
merge settings (visual_tokens, keep_ratio, merge_method, visual_selection, merge_metric, proportional_attention, ...):
they are applied with `apply_pitome` over the folder's own (the one update rule, `merge_config.resolve_update`; an
unknown name or value is refused by it), and the prompts are written by the family's PiToMe processor made from the
resulting config (`from_model_config`), so model and processor always hold the same budget, as in
`pitome-hf evaluate --task vqa`. Each prompt is the checkpoint's chat template with the request's images before its
text. `generate_until` runs batches of `batch_size` requests (left-padded); loglikelihood is refused.

This module imports lmms-eval; `import pitome_hf` never imports it (lmms-eval is the `lmms` extra).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import torch
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

PREFIX = "pitome_"
CLASS_PREFIX = "PiToMe_"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def plugin_families() -> tuple:
    """The registry's families this plug-in serves: a PiToMe processor and a config reading `visual_tokens` (the
    reduction at the language model's input)."""
    from pitome_hf.families import FAMILIES

    return tuple(f for f in FAMILIES if f.processor is not None
                 and any("visual_tokens" in c.family_merge_fields for c in f.config_classes))


def model_names() -> list[str]:
    return [PREFIX + f.name for f in plugin_families()]


def manifests() -> list[ModelManifest]:
    """The `lmms_eval.models` entry point: one manifest per served family."""
    return [ModelManifest(model_id=PREFIX + f.name, simple_class_path=f"{__name__}.{CLASS_PREFIX}{f.name}")
            for f in plugin_families()]


def _family(name: str):
    for family in plugin_families():
        if family.name == name:
            return family
    raise ValueError(f"no lmms-eval model pitome_{name}: the models are {', '.join(model_names())}.")


def _cut(text: str, until) -> str:
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


class PiToMeLMM(lmms):
    """One family's model under lmms-eval (`family_name` is set by each family's subclass)."""

    family_name = ""
    is_simple = True
    HARNESS_ARGS = ("pretrained", "device", "dtype", "batch_size", "max_batch_size", "max_new_tokens", "system_prompt")

    def __init__(self, pretrained: Optional[str] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 batch_size=1, max_batch_size=None, max_new_tokens: int = 128, system_prompt: Optional[str] = None,
                 **settings) -> None:
        super().__init__()
        from pitome_hf.apply import apply_pitome
        from pitome_hf.checkpoints import processor_parts
        from pitome_hf.evaluation.tasks_base import load_checked, model_type_of, task_model_class
        from pitome_hf.families import family_of

        name = PREFIX + self.family_name
        self.family = family = _family(self.family_name)
        if not pretrained:
            raise ValueError(f"{name} needs pretrained=FOLDER in --model_args (a {family.name} checkpoint, stock or "
                             "converted by pitome-hf convert).")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(f"{name} runs in one process (WORLD_SIZE={os.environ['WORLD_SIZE']}): launch lmms-eval "
                             "without accelerate/torchrun.")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"{name}: batch_size={batch_size!r} is not a whole number >= 1 ('auto' is not "
                             "supported): pass --batch_size N.")
        batch_size = int(batch_size)
        if dtype is not None and str(dtype) not in DTYPES:
            raise ValueError(f"{name}: dtype={dtype!r} is not one of {', '.join(DTYPES)}: pass dtype=bfloat16 (say).")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"{name}: max_new_tokens={max_new_tokens!r} is not a whole number >= 1.")
        model_type, config_dict = model_type_of(str(pretrained))
        try:
            found = family_of(str(model_type))
        except ValueError:
            found = None
        if found is not family:
            other = f"; use --model pitome_{found.name}" if found is not None and found in plugin_families() else ""
            raise ValueError(f"{pretrained} is a {model_type!r} model; --model {name} takes {family.name} checkpoints "
                             f"(stock or converted){other}.")

        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = DTYPES[str(dtype)] if dtype else (torch.bfloat16 if self._device.type == "cuda" else torch.float32)
        # the weights, every one checked (stock or converted folder: the family's PiToMe class loads both), merging off;
        # then the folder's own merge_method (or the family default, for a stock folder) and the given settings, as one
        # update by the rule every path shares
        base = load_checked(task_model_class(config_dict), str(pretrained))
        defaults = {f.name: f.default for f in dataclasses.fields(type(base.config))}
        settings = {"merge_method": config_dict.get("merge_method", defaults.get("merge_method")), **settings}
        try:
            net = apply_pitome(base, **settings)
        except (TypeError, ValueError) as error:  # an unknown setting or value, worded by the settings' owner
            raise type(error)(f"{name} --model_args: {error}") from None
        self._model = net.to(self._device, self.dtype).eval()

        parts = processor_parts(family.processor, str(pretrained))
        if parts is None:
            raise ValueError(f"{pretrained} has no tokenizer or image processor: {name} builds the {family.name} "
                             "processor from them.")
        template = family.processor.get_processor_dict(str(pretrained))[0].get("chat_template")
        template = template or getattr(parts["tokenizer"], "chat_template", None)
        if not template:
            raise ValueError(f"{pretrained} has no chat template (chat_template.jinja, or the tokenizer's): {name} "
                             "writes each prompt with it; copy the base checkpoint's chat_template.jinja into the "
                             "folder.")
        self._tokenizer = parts["tokenizer"]
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self.processor = family.processor.from_model_config(self._model.config, **parts, chat_template=template)
        self.batch_size_per_gpu = batch_size
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt

    # -- what lmms-eval reads --------------------------------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def config(self):
        return self._model.config

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._device

    @property
    def eot_token_id(self):
        return self._tokenizer.eos_token_id

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{PREFIX}{self.family_name} generates only: loglikelihood tasks are not supported; "
                                  "run generate_until tasks.")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{PREFIX}{self.family_name}: multi-round generation is not supported; run "
                                  "generate_until tasks.")

    # -- generation ------------------------------------------------------------------------------------------------
    def _images(self, visuals, doc_id) -> list:
        from PIL import Image

        images = []
        for visual in visuals or []:
            if not isinstance(visual, Image.Image):
                raise ValueError(f"{PREFIX}{self.family_name} takes images; document {doc_id} gives a "
                                 f"{type(visual).__name__} ({str(visual)[:60]!r}): run an image task.")
            images.append(visual.convert("RGB"))
        return images

    def prompt(self, context: str, num_images: int) -> str:
        """The chat template's prompt for one request: its images, then its text (an `<image>` marker in the text is
        dropped, as lmms-eval's own models do), the generation prompt after it."""
        content = [{"type": "image"}] * num_images + [{"type": "text", "text": context.replace("<image>", "")}]
        messages = [{"role": "user", "content": content}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generation_kwargs(self, gen_kwargs: dict) -> tuple[dict, list]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0)
        sample = bool(gen_kwargs.get("do_sample", False)) or temperature > 0
        kwargs = dict(max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)), do_sample=sample,
                      num_beams=int(gen_kwargs.get("num_beams") or 1), pad_token_id=self._tokenizer.pad_token_id)
        if sample:
            kwargs["temperature"] = temperature or 1.0
            if gen_kwargs.get("top_p") is not None:
                kwargs["top_p"] = float(gen_kwargs["top_p"])
        return kwargs, until

    def generate_until(self, requests) -> list:
        """Greedy (or sampled, as the task asks) answers, `batch_size` requests per `generate` call; each answer
        carries its prompt's token count (TokenCounts.input_tokens, in lmms-eval's logged samples: the visual tokens
        the budget lets through plus the text)."""
        collator = lmms_utils.Collator([r.args for r in requests], lambda args: (-len(args[0]), args[0]),
                                       grouping=True)
        results = []
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            contexts, all_kwargs, to_visual, doc_ids, tasks, splits = zip(*chunk)
            images, prompts = [], []
            for context, visual, doc_id, task, split in zip(contexts, to_visual, doc_ids, tasks, splits):
                own = self._images(visual(self.task_dict[task][split][doc_id]), doc_id)
                images += own
                prompts.append(self.prompt(context, len(own)))
            enc = self.processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
            enc = {k: (v.to(self._device, self.dtype) if v.is_floating_point() else v.to(self._device))
                   for k, v in enc.items()}
            kwargs, until = self._generation_kwargs(all_kwargs[0])
            with torch.no_grad():
                out = self._model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            texts = self._tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, (context, text) in enumerate(zip(contexts, texts)):
                answer = _cut(text, until)
                self.cache_hook.add_partial("generate_until", (context, all_kwargs[i]), answer)
                counts = TokenCounts(input_tokens=int(enc["attention_mask"][i].sum()),
                                     output_tokens=int((new[i] != self._tokenizer.pad_token_id).sum()))
                results.append(GenerationResult(text=answer, token_counts=counts))
        return collator.get_original(results)


@functools.cache
def _model_class(family_name: str) -> type:
    name = CLASS_PREFIX + family_name
    return type(name, (PiToMeLMM,), {"family_name": family_name, "__module__": __name__, "__qualname__": name})


def __getattr__(name: str):
    """`PiToMe_<family>`: the lmms-eval class of a served family (the manifests' class paths)."""
    if name.startswith(CLASS_PREFIX):
        family = name[len(CLASS_PREFIX):]
        if family in {f.name for f in plugin_families()}:
            return _model_class(family)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
