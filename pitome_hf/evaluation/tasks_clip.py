"""The dual-encoder tasks (CLIP, SigLIP): zero-shot image classification and image-text retrieval."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pitome_hf.evaluation.tasks_base import (RECALL_KS, Task, check_model_type, check_prompt, load_checked,
                                             task_model_class)
from pitome_hf.evaluation.tasks_classification import ImageClassification, check_label_range, read_labels


class _ClipTask(Task):
    """Dual-encoder tasks (the registry's families for this task: CLIP, SigLIP): the family's main class with both
    towers; only the image tower merges."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from transformers import AutoImageProcessor, AutoTokenizer

        from pitome_hf.families import family_of

        config_dict = check_model_type(self.model_path, self.name)
        self.family = family_of(config_dict["model_type"])
        self.base = self.place(load_checked(task_model_class(config_dict), self.model_path, **self.load_options()))
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
        # pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
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
