"""The tasks `pitome-hf evaluate` runs: one class per task, all driven by the same sweep in pitome_hf.evaluation.evaluate.

A task loads the model (merging off) and what it needs beside it, prepares this process's shard of the data, runs one
merge configuration over it (timing the model forward only, after warm-up, with device synchronisation) and turns
the gathered per-sample outputs into metrics through the shipped `evaluate` modules.

| task                            | models        | columns (defaults)                   | metrics                         |
|---------------------------------|---------------|--------------------------------------|---------------------------------|
| image-classification            | ViT, DeiT     | image, label                         | accuracy                        |
| zero-shot-image-classification  | CLIP          | image, label (a ClassLabel: names)   | accuracy                        |
| image-text-retrieval            | CLIP          | image, caption (a string or a list)  | recall@1/5/10 both ways, mean   |
| vqa                             | VLM families  | image, question, answers (list/str)  | VQA soft accuracy               |
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from pitome_hf.families import model_types_for_task
from pitome_hf.measurement.timing import synchronize

CACHE_LIMIT_BYTES = 2 << 30  # keep preprocessed batches in memory across runs below this size
RECALL_KS = (1, 5, 10)
DEFAULT_PROMPTS = {
    "zero-shot-image-classification": "a photo of a {}.",
    # LLaVA-1.5's short-answer VQA prompt
    "vqa": "USER: <image>\n{} Answer the question using a single word or phrase. ASSISTANT:",
}


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=None)  # off when not a terminal


def model_type_of(model: str) -> tuple[str, dict]:
    from transformers import PretrainedConfig

    config_dict, _ = PretrainedConfig.get_config_dict(str(model))
    return config_dict.get("model_type"), config_dict


TASK_MODELS = {  # what each task's checkpoints are, for messages
    "image-classification": "ViT and DeiT classifiers in the ViT layout",
    "zero-shot-image-classification": "a dual encoder with both towers (CLIPModel, SiglipModel)",
    "image-text-retrieval": "a dual encoder with both towers (CLIPModel, SiglipModel)",
    "vqa": "vision-language models whose family serves vqa",
}


def check_model_type(model: str, task: str) -> dict:
    """The model's config dict, after checking that its type serves `task`; else a ValueError naming the model's
    type, the types the task takes and the tasks this model's family serves."""
    from pitome_hf.families import family_of

    model_type, config_dict = model_type_of(model)
    allowed = model_types_for_task(task)
    if model_type not in allowed:
        try:
            tasks = family_of(str(model_type)).tasks
        except ValueError:
            tasks = ()
        serves = (f"a {model_type!r} model serves {', '.join(tasks)}: pass --task {tasks[0]}" if tasks else
                  f"pitome-hf evaluate has no task for a {model_type!r} model")
        raise ValueError(f"{model} is a {model_type!r} model; the task {task} supports {', '.join(allowed)} "
                         f"checkpoints ({TASK_MODELS.get(task, task)}); {serves}.")
    return config_dict


def task_model_class(config_dict: dict) -> type:
    """The PiToMe class a task runs for a checkpoint: its family's main class in the registry (ViT: the classifier,
    LLaVA: the generator, CLIP/SigLIP: the dual model)."""
    from pitome_hf.families import family_of

    return family_of(str(config_dict.get("model_type"))).models[0].pitome


class Batches:
    """Preprocessed batches of this process's shard: (inputs, indices). Cached in memory across runs when small."""

    def __init__(self, indices: list[int], batch_size: int, make: Callable[[list[int]], dict], cache: bool = True):
        self.indices, self.batch_size, self.make, self.use_cache = indices, batch_size, make, cache
        self.cache: Optional[list] = None

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def _make(self) -> Iterator[tuple[dict, list[int]]]:
        for start in range(0, len(self.indices), self.batch_size):
            idx = self.indices[start : start + self.batch_size]
            yield self.make(idx), idx

    def __iter__(self):
        if self.cache is not None:
            return iter(self.cache)
        batches = self._make()
        first = next(batches, None)
        if first is None:
            return iter(())
        size = sum(v.numel() * v.element_size() for v in first[0].values() if torch.is_tensor(v))
        if self.use_cache and size * len(self) < CACHE_LIMIT_BYTES:
            self.cache = [first, *batches]
            return iter(self.cache)
        return itertools.chain([first], batches)


def timed_run(batches: Batches, forward: Callable[[dict], list], device: torch.device, progress: bool, desc: str,
              warmup: int = 2) -> tuple[dict, float]:
    """{index: output} over the shard and the seconds spent in `forward` (after `warmup` untimed batches)."""
    outputs, seconds = {}, 0.0
    with torch.inference_mode():
        for i, (inputs, _) in enumerate(batches):
            if i >= warmup:
                break
            forward(inputs)
        for inputs, idx in _progress(batches, len(batches), desc, progress):
            synchronize(device)
            start = time.perf_counter()
            out = forward(inputs)
            synchronize(device)
            seconds += time.perf_counter() - start
            outputs.update(zip(idx, out))
    return outputs, seconds


def _rgb(images) -> list:
    return [img.convert("RGB") for img in images]


def read_images(ds, column: str, idx: list[int]) -> list:
    """The RGB images of rows `idx`; an image that cannot be decoded is named by its row and file (RuntimeError)."""
    try:
        images = ds[idx][column]
        empty = [i for i, image in zip(idx, images) if image is None]
        if not empty:
            return _rgb(images)
    except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for truncated or foreign files
        import datasets

        raw = ds.cast_column(column, datasets.Image(decode=False))
        for i in idx:
            try:
                _rgb([ds[i][column]])
            except (OSError, ValueError, SyntaxError) as bad:
                where = raw[i][column].get("path") or "stored in the table"
                raise RuntimeError(f"the image in row {i} of the column {column!r} ({where}) cannot be read: "
                                   f"{type(bad).__name__}: {bad}.") from None
        raise error
    raise ValueError(f"row {empty[0]} of the image column {column!r} holds no image (None); drop such rows first.")


def image_sizes(ds, column: str, n: int) -> dict:
    """{(height, width): first row holding an image of that size} over the first `n` rows, read from the image files'
    headers (no pixels decoded); an image that cannot be opened is left out (reading it names it)."""
    import io

    import datasets
    from PIL import Image

    raw = ds.select(range(n)).select_columns([column]).cast_column(column, datasets.Image(decode=False))
    sizes, row = {}, 0
    for batch in raw.iter(batch_size=256):
        for item in batch[column]:
            try:
                source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
                with Image.open(source) as image:
                    sizes.setdefault((image.height, image.width), row)
            except (OSError, ValueError, SyntaxError, TypeError, AttributeError):
                pass
            row += 1
    return sizes


def check_prompt(prompt: str, task: str, needs: tuple = ()) -> None:
    """The prompt has one `{}` (and each string in `needs`) and formats; else a ValueError naming it."""
    try:
        ok = prompt.count("{}") == 1 and prompt.format("x") is not None and all(n in prompt for n in needs)
    except (KeyError, IndexError, ValueError):
        ok = False
    if not ok:
        what = " and ".join([*map(repr, needs), "one '{}'"])
        raise ValueError(f"prompt={prompt!r} does not fit the task {task}: it needs {what} (where the "
                         f"{'question' if needs else 'class name'} goes) and no other braces; e.g. "
                         f"{DEFAULT_PROMPTS[task]!r}.")


def _image_size(pixels: torch.Tensor) -> int:
    return int(pixels.shape[-1])


def load_checked(model_class: type, model: str):
    """`model_class.from_pretrained(model)` with merging off and every weight loaded: a checkpoint with missing,
    unexpected or mismatched keys (a head it lacks would keep random weights and score by chance) or unreadable weight
    files is refused, naming the model."""
    from safetensors import SafetensorError

    try:
        net, info = model_class.from_pretrained(str(model), merge_method="none", output_loading_info=True)
    except SafetensorError as error:
        raise RuntimeError(f"the weights of {model} cannot be read (SafetensorError: {error}): a truncated or "
                           "corrupt .safetensors file?") from None
    bad = {k: sorted(map(str, info[k]))[:5] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
           if info.get(k)}
    if bad:
        raise ValueError(f"{model} does not load every weight into {model_class.__name__} ({bad}): those weights would "
                         "be random and the scores meaningless. Evaluate a checkpoint of this task.")
    return net


def load_classifier(model: str):
    """(PiToMe classifier with merging off, image processor) for a stock or PiToMe checkpoint of a family that serves
    image classification (the registry's main class of its family)."""
    from transformers import AutoImageProcessor

    config_dict = check_model_type(model, "image-classification")
    if not config_dict.get("id2label") and not config_dict.get("num_labels"):
        raise ValueError(f"{model} has no classification head (no id2label in its config).")
    net = load_checked(task_model_class(config_dict), model)
    return net, AutoImageProcessor.from_pretrained(str(model))


def read_labels(ds, column: str, n: int) -> tuple:
    """(dataset, the first `n` labels as ints, class names or None). A column of strings becomes a ClassLabel (names
    sorted); integral floats are ids; anything else, or an empty row, is refused naming the column and row."""
    import datasets

    feature = ds.features[column]
    if isinstance(feature, datasets.Value) and "string" in feature.dtype:
        if None in ds[column][:n]:
            raise ValueError(f"row {list(ds[column][:n]).index(None)} of the label column {column!r} is empty.")
        ds = ds.class_encode_column(column)
        feature = ds.features[column]
    numeric = isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "float"))
    if not isinstance(feature, datasets.ClassLabel) and not numeric:
        raise ValueError(f"the label column {column!r} holds {feature}, not class ids or names: pass --label-column "
                         "with the column of class labels.")
    labels = list(ds[column][:n])
    for i, label in enumerate(labels):
        if label is None or (isinstance(label, float) and not label.is_integer()):
            raise ValueError(f"row {i} of the label column {column!r} holds {label!r}, not a class id.")
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    return ds, [int(label) for label in labels], names


def check_label_range(labels: list[int], num_classes: int, column: str, whose: str) -> None:
    """Every label is a class id 0..num_classes-1; else a ValueError naming the first one that is not."""
    for i, label in enumerate(labels):
        if not 0 <= label < num_classes:
            hint = ("; -1 marks an unlabelled row (as in many test splits): evaluate a labelled split" if label == -1
                    else "")
            raise ValueError(f"row {i} of the label column {column!r} holds label {label}, which is not a class id: "
                             f"{whose} {num_classes} classes, so labels must be 0..{num_classes - 1}{hint}.")


def label_mapping(model_config, names: Optional[list[str]], labels_by_id: bool) -> tuple:
    """(dataset label id -> model label id, or None for the same ids; how many class ids the labels may use; whose
    classes those are). Class names are matched to the model's labels (case-insensitive) and a dataset naming a class
    the model lacks is refused, unless `labels_by_id` (dataset id k is the model's label k). A dataset without names
    is read as the model's ids."""
    model_names = {str(v).lower(): int(k) for k, v in model_config.id2label.items()}
    if names and not labels_by_id:
        unknown = [n for n in names if n.lower() not in model_names]
        if unknown:
            shown = list(map(str, model_config.id2label.values()))
            shown = ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")
            raise ValueError(
                f"the dataset's class {unknown[0]!r} ({len(unknown)} of its {len(names)} class names) is not among the "
                f"model's {model_config.num_labels} labels ({shown}): the classes do not match. Use a model trained "
                "for these classes, or pass --labels-by-id to read dataset label k as the model's label k."
            )
        return torch.tensor([model_names[n.lower()] for n in names]), len(names), "the dataset names"
    return None, model_config.num_labels, "the model has"


class Task:
    """One evaluation task. Subclasses set `name`, `columns` ({role: default column}) and implement the hooks."""

    name = ""
    columns: dict[str, str] = {}

    def __init__(self, model: str, ds, columns: dict, device: torch.device, dtype: torch.dtype, batch_size: int,
                 num_samples: int, prompt: Optional[str] = None, max_new_tokens: int = 10,
                 labels_by_id: bool = False):
        self.model_path, self.ds, self.col = model, ds, columns
        self.labels_by_id = labels_by_id
        self.device, self.dtype, self.batch_size, self.n = device, dtype, batch_size, num_samples
        self.prompt = prompt or DEFAULT_PROMPTS.get(self.name)
        self.max_new_tokens = max_new_tokens
        self.base = None
        self.image_size: Optional[int] = None

    def batches(self, shard: list[int]) -> Batches:
        raise NotImplementedError

    def pixel_batches(self, shard: list[int], default_size: int) -> Batches:
        """Batches of preprocessed `pixel_values` (self.processor); sets `image_size` from them (or `default_size`
        when this process's shard is empty)."""

        def make(idx):
            images = read_images(self.ds, self.col["image"], idx)
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            return {"pixel_values": pixels.to(self.device, self.dtype)}

        batches = Batches(shard, self.batch_size, make)
        first = next(iter(batches), None)
        self.image_size = _image_size(first[0]["pixel_values"]) if first else default_size
        return batches

    def forward(self, net) -> Callable[[dict], list]:
        raise NotImplementedError

    def check_rows(self, nets) -> None:
        """Refuse, before anything is measured or written, a row this data cannot run (ValueError); none by default."""

    def score(self, outputs: dict) -> dict:
        raise NotImplementedError

    def gflops(self, net) -> float:
        raise NotImplementedError

    def token_counts(self, net) -> list[int]:
        raise NotImplementedError


class ImageClassification(Task):
    name = "image-classification"
    columns = {"image": "image", "label": "label"}
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

        self.base, self.processor = load_classifier(self.model_path)
        self.base = self.base.to(self.device, self.dtype).eval()
        column = self.col["label"]
        self.ds, self.labels, names = read_labels(self.ds, column, self.n)
        self.mapping, num_classes, whose = label_mapping(self.base.config, names, self.labels_by_id)
        check_label_range(self.labels, num_classes, column, whose)

    def batches(self, shard):
        return self.pixel_batches(shard, self.base.config.image_size)

    def forward(self, net):
        mapping = None if self.mapping is None else self.mapping.to(self.device)

        def run(inputs):
            logits = net(**inputs).logits
            if mapping is not None:  # restrict to the dataset's classes, in dataset order
                logits = logits[:, mapping]
            return logits.argmax(-1).tolist()

        return run

    def score(self, outputs):
        from pitome_hf.evaluation.metrics import load_metric

        keys = sorted(outputs)
        metric = load_metric("accuracy")
        return metric.compute(predictions=[outputs[i] for i in keys], references=[self.labels[i] for i in keys])

    def gflops(self, net):
        from pitome_hf.flops import vit_flops

        return vit_flops(net.config, image_size=self.image_size) / 1e9

    def token_counts(self, net):
        # pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
        from pitome_hf.modeling import token_schedule

        patch = net.config.patch_size if isinstance(net.config.patch_size, int) else net.config.patch_size[0]
        return token_schedule(net.config, num_tokens=(self.image_size // patch) ** 2)


class _ClipTask(Task):
    """Dual-encoder tasks (the registry's families for this task: CLIP, SigLIP): the family's main class with both
    towers; only the image tower merges."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from transformers import AutoImageProcessor, AutoTokenizer

        from pitome_hf.families import family_of

        config_dict = check_model_type(self.model_path, self.name)
        self.family = family_of(config_dict["model_type"])
        self.base = load_checked(task_model_class(config_dict), self.model_path)
        self.base = self.base.to(self.device, self.dtype).eval()
        self.processor = AutoImageProcessor.from_pretrained(self.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)

    def batches(self, shard):
        return self.pixel_batches(shard, self.base.config.vision_config.image_size)

    def image_embeds(self, net, inputs) -> torch.Tensor:
        from pitome_hf.evaluation.retrieval import features_of

        return F.normalize(features_of(net.get_image_features(**inputs), "image_embeds").float(), dim=-1)

    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        from pitome_hf.evaluation.retrieval import text_embeddings

        return text_embeddings(self.base, texts, tokenizer=self.tokenizer, batch_size=256,
                               padding=self.family.text_padding).to(self.device)

    def gflops(self, net):
        return self.family.flops(net.config, image_size=self.image_size) / 1e9

    def token_counts(self, net):
        from pitome_hf.modeling import token_schedule

        vision = net.config.vision_config
        patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
        return token_schedule(net.config, num_tokens=(self.image_size // patch) ** 2,
                              num_layers=vision.num_hidden_layers)


class ZeroShotClassification(_ClipTask):
    """CLIP zero-shot: each class name goes through the prompt template (default "a photo of a {}."); an image's
    prediction is the class whose text embedding is closest. The text tower never merges, so its embeddings are
    computed once and shared by every configuration; only the image tower is timed."""

    name = "zero-shot-image-classification"
    columns = {"image": "image", "label": "label"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

        self.ds, self.labels, names = read_labels(self.ds, self.col["label"], self.n)
        if not names:
            raise ValueError(
                f"zero-shot classification needs class names: the label column {self.col['label']!r} is a "
                f"{type(self.ds.features[self.col['label']]).__name__}, not a datasets.ClassLabel with names."
            )
        check_prompt(self.prompt, self.name)
        check_label_range(self.labels, len(names), self.col["label"], "the dataset names")
        self.class_embeds = self.text_embeds([self.prompt.format(n.replace("_", " ")) for n in names])

    def forward(self, net):
        def run(inputs):
            embeds = self.image_embeds(net, inputs)
            return (embeds @ self.class_embeds.T).argmax(-1).tolist()

        return run

    score = ImageClassification.score


class ImageTextRetrieval(_ClipTask):
    """CLIP image-text retrieval over the evaluated images and all their captions (a caption column holding a string
    or a list of strings per image). Recall@k through the shipped `recall_at_k` module, both ways: image->text (an
    image scores when any of its captions is in the top k) and text->image. `recall_mean` is the mean of the six."""

    name = "image-text-retrieval"
    columns = {"image": "image", "text": "caption"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        texts, owner = [], []
        for i, captions in enumerate(self.ds[self.col["text"]][: self.n]):
            captions = [captions] if isinstance(captions, str) else captions
            if not isinstance(captions, (list, tuple)) or not captions or not all(isinstance(c, str) for c in captions):
                raise ValueError(
                    f"row {i} of the caption column {self.col['text']!r} holds {captions!r}: each row needs a string or "
                    "a non-empty list of strings."
                )
            texts.extend(captions)
            owner.extend([i] * len(captions))
        self.owner = torch.tensor(owner)
        self.caption_embeds = self.text_embeds(texts)

    def forward(self, net):
        def run(inputs):
            return list(self.image_embeds(net, inputs).cpu())

        return run

    def score(self, outputs):
        from pitome_hf.evaluation.metrics import load_metric

        keys = sorted(outputs)
        if keys != list(range(self.n)):
            raise RuntimeError(f"retrieval needs every image's embedding; got {len(keys)} of {self.n}.")
        similarity = torch.stack([outputs[i] for i in keys]) @ self.caption_embeds.cpu().T  # (images, texts)
        k = max(RECALL_KS)
        i2t = similarity.sort(dim=1, descending=True, stable=True).indices[:, :k]
        t2i = similarity.T.sort(dim=1, descending=True, stable=True).indices[:, :k]
        captions_of = [[] for _ in keys]
        for text, image in enumerate(self.owner.tolist()):
            captions_of[image].append(text)
        metrics = {}
        for direction, ranked, refs in (("i2t", i2t, captions_of), ("t2i", t2i, [[i] for i in self.owner.tolist()])):
            values = load_metric("recall_at_k").compute(predictions=ranked.tolist(), references=refs, k=list(RECALL_KS))
            metrics.update({f"{direction}_{name}": value for name, value in values.items()})
        return {"recall_mean": sum(metrics.values()) / len(metrics), **metrics}


class VisualQuestionAnswering(Task):
    """VQA with a vision-language family of the registry (LLaVA-1.5, Qwen2.5-VL, ...: a family serving "vqa" with a
    PiToMe processor): greedy generation of a short answer to `prompt` (the family's `vqa_prompt`, else LLaVA-1.5's
    VQAv2 prompt; the processor's image token marks the image, `{}` the question), scored with the shipped VQA soft
    accuracy. The prompt is built by the family's PiToMe processor made from each configuration's settings, so it
    holds exactly that configuration's number of image tokens. Timing covers `generate` (prefill and decoding);
    GFLOPs are the family's analytic prefill FLOPs per question (its processor outputs that the FLOPs function takes,
    e.g. Qwen2.5-VL's image_grid_thw), averaged over the questions run."""

    name = "vqa"
    columns = {"image": "image", "text": "question", "label": "answers"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from pitome_hf.checkpoints import processor_parts
        from pitome_hf.families import family_of

        config_dict = check_model_type(self.model_path, self.name)
        self.family = family_of(str(config_dict["model_type"]))
        self.parts = processor_parts(self.family.processor, self.model_path)
        if self.parts is None:
            raise ValueError(f"{self.model_path} has no tokenizer or image processor: the vqa task builds the "
                             f"{self.family.name} processor from them.")
        if not kwargs.get("prompt") and self.family.vqa_prompt:
            self.prompt = self.family.vqa_prompt
        self.base = load_checked(task_model_class(config_dict), self.model_path)
        self.base = self.base.to(self.device, self.dtype).eval()
        self.tokenizer = self.parts["tokenizer"]
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.image_token = self.family.processor.from_model_config(self.base.config, **self.parts).image_token
        check_prompt(self.prompt, self.name, needs=(self.image_token,))
        self.answers = vqa_answers(self.ds[self.col["label"]][: self.n], self.col["label"])
        questions = list(self.ds[self.col["text"]][: self.n])
        for i, question in enumerate(questions):
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"row {i} of the question column {self.col['text']!r} holds {question!r}: each row "
                                 "needs a question (a non-empty string).")
        self.processor = None
        self.per_question: dict = {}  # id(net) -> {sample index: (prefill FLOPs, image tokens)}

    def batches(self, shard):
        def make(idx):  # raw inputs: the prompt's image-token count depends on the configuration
            questions = self.ds.select_columns([self.col["text"]])[idx][self.col["text"]]
            return {"images": read_images(self.ds, self.col["image"], idx), "questions": questions, "index": idx}

        size = getattr(self.base.config.vision_config, "image_size", None)
        self.image_size = size if isinstance(size, int) or size is None else size[0]
        return Batches(shard, self.batch_size, make, cache=False)

    def forward(self, net):
        import inspect

        processor = self.family.processor.from_model_config(net.config, **self.parts)
        token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        takes = [k for k in inspect.signature(self.family.flops).parameters if k != "config"]
        record = self.per_question.setdefault(id(net), {})

        def run(inputs):
            enc = processor(images=inputs["images"], text=[self.prompt.format(q) for q in inputs["questions"]],
                            return_tensors="pt", padding=True)
            image = (enc["input_ids"] == token_id) & enc["attention_mask"].bool()
            for i, index in enumerate(inputs["index"]):  # one image per question: row i of each per-image output
                n = int(image[i].sum())
                kwargs = {k: enc[k][i : i + 1].tolist() for k in takes if k in enc}
                text = int(enc["attention_mask"][i].sum()) - n
                record[index] = (self.family.flops(net.config, text, **kwargs), n)
            enc = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                   for k, v in enc.items()}
            out = net.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                               pad_token_id=self.tokenizer.pad_token_id)
            return [a.strip() for a in self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                                                   skip_special_tokens=True)]

        return run

    def check_rows(self, nets) -> None:
        """A visual-token budget that some question's image cannot meet (more tokens than the image has) is refused
        before the sweep, naming the row and the image's size: each row's processor counts the tokens of every image
        size in the data (`_get_num_multimodal_tokens`, from the sizes alone)."""
        budgeted = [net for net in nets if getattr(net.config, "visual_tokens", None) is not None]
        if not budgeted:
            return
        column = self.col["image"]
        sizes = image_sizes(self.ds, column, self.n)
        for net in budgeted:
            processor = self.family.processor.from_model_config(net.config, **self.parts)
            for (height, width), row in sizes.items():
                try:
                    processor._get_num_multimodal_tokens(image_sizes=[[height, width]])
                except ValueError as error:
                    raise ValueError(f"row {row} of the image column {column!r} ({width} x {height} px): "
                                     f"{error}") from None

    def score(self, outputs):
        from pitome_hf.evaluation.metrics import load_metric

        keys = sorted(outputs)
        return load_metric("vqa_accuracy").compute(predictions=[outputs[i] for i in keys],
                                                   references=[self.answers[i] for i in keys])

    def _mean(self, net, column: int) -> float:
        values = [v[column] for v in self.per_question.get(id(net), {}).values()]
        return sum(values) / len(values) if values else float("nan")

    def gflops(self, net):
        return self._mean(net, 0) / 1e9

    def token_counts(self, net):
        """A family whose vision tower merges (the registry's `vision_merge_settings`, LLaVA-1.5): the tower's tokens
        per layer; families that reduce at the language model's input: the mean number of image tokens per question
        reaching it."""
        from pitome_hf.modeling import token_schedule

        tower = self.family.vision_merge_settings
        if tower is None:
            return [round(self._mean(net, 1))]
        vision = net.config.vision_config
        patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
        return token_schedule(tower(net.config), num_tokens=(self.image_size // patch) ** 2)


def vqa_answers(rows, column: str) -> list[list[str]]:
    """Each row's reference answers as a list of strings; a row without any (None, [], a number) is refused."""
    answers = []
    for i, row in enumerate(rows):
        row = [row] if isinstance(row, str) else row
        if not isinstance(row, (list, tuple)) or not row or not all(isinstance(a, str) for a in row):
            raise ValueError(f"row {i} of the answers column {column!r} holds {row!r}: each row needs an answer string "
                             "or a non-empty list of them.")
        answers.append(list(row))
    return answers


TASK_CLASSES = {cls.name: cls for cls in (ImageClassification, ZeroShotClassification, ImageTextRetrieval,
                                          VisualQuestionAnswering)}
TASKS = tuple(TASK_CLASSES)
