"""The machinery every task of pitome_hf.evaluation.tasks shares: the defaults, the model-type checks, the
batches of a shard and their timed run, reading images, prompt checks, loading a checkpoint with every weight,
and the Task base class the per-task classes implement."""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Iterator, Optional

import torch

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


def load_checked(model_class: type, model: str, **load_options):
    """`model_class.from_pretrained(model, **load_options)` (e.g. dtype, device_map) with merging off and every
    weight loaded: a checkpoint with missing, unexpected or mismatched keys (a head it lacks would keep random weights
    and score by chance) or unreadable weight files is refused, naming the model."""
    from safetensors import SafetensorError

    try:
        net, info = model_class.from_pretrained(str(model), merge_method="none", output_loading_info=True,
                                                **load_options)
    except SafetensorError as error:
        raise RuntimeError(f"the weights of {model} cannot be read (SafetensorError: {error}): a truncated or "
                           "corrupt .safetensors file?") from None
    bad = {k: sorted(map(str, info[k]))[:5] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
           if info.get(k)}
    if bad:
        raise ValueError(f"{model} does not load every weight into {model_class.__name__} ({bad}): those weights would "
                         "be random and the scores meaningless. Evaluate a checkpoint of this task.")
    return net



class Task:
    """One evaluation task. Subclasses set `name`, `columns` ({role: default column}) and implement the hooks."""

    name = ""
    columns: dict[str, str] = {}

    def __init__(self, model: str, ds, columns: dict, device: torch.device, dtype: torch.dtype, batch_size: int,
                 num_samples: int, prompt: Optional[str] = None, max_new_tokens: int = 10,
                 labels_by_id: bool = False, device_map: Optional[str] = None):
        self.model_path, self.ds, self.col = model, ds, columns
        self.labels_by_id = labels_by_id
        self.device_map = device_map
        self.device, self.dtype, self.batch_size, self.n = device, dtype, batch_size, num_samples
        self.prompt = prompt or DEFAULT_PROMPTS.get(self.name)
        self.max_new_tokens = max_new_tokens
        self.base = None
        self.image_size: Optional[int] = None

    def load_options(self) -> dict:
        """What `from_pretrained` is given: the task's dtype (read in it, no second copy), and its device map."""
        return {"dtype": self.dtype, **({"device_map": self.device_map} if self.device_map else {})}

    def place(self, net):
        """`net` in eval mode on the task's device and dtype; a model spread by `device_map` stays where accelerate
        put it, and the task's device becomes that of its first module (where the inputs go). A map that offloads
        layers to the CPU or disk beside GPUs is refused: the rows share the weights, which offloaded layers do not
        hold."""
        if self.device_map is None:
            return net.to(self.device, self.dtype).eval()
        device_map = getattr(net, "hf_device_map", None) or {"": str(next(net.parameters()).device)}  # one device
        placed = list(dict.fromkeys(device_map.values()))
        offloaded = [d for d in placed if d in ("cpu", "disk")]
        if offloaded and len(placed) > 1:
            raise ValueError(f"--device-map {self.device_map} put some of {self.model_path}'s layers on "
                             f"{' and '.join(offloaded)} (the GPUs lack room for it): the rows share one copy of the "
                             "weights, which offloaded layers do not allow; use more GPUs or free their memory.")
        first = placed[0]
        self.device = torch.device("cuda", first) if isinstance(first, int) else torch.device(first)
        return net.eval()

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
