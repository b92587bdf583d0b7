"""Image classification (ViT, DeiT): loading the classifier, reading and mapping the labels, and the
image-classification task."""

from __future__ import annotations

from typing import Optional

import torch

from pitome_hf.evaluation.tasks_base import Task, check_model_type, load_checked, task_model_class


def load_classifier(model: str, **load_options):
    """(PiToMe classifier with merging off, image processor) for a stock or PiToMe checkpoint of a family that serves
    image classification (the registry's main class of its family); `load_options` go to `from_pretrained` (dtype,
    device_map)."""
    from transformers import AutoImageProcessor

    config_dict = check_model_type(model, "image-classification")
    if not config_dict.get("id2label") and not config_dict.get("num_labels"):
        raise ValueError(f"{model} has no classification head (no id2label in its config).")
    net = load_checked(task_model_class(config_dict), model, **load_options)
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



class ImageClassification(Task):
    name = "image-classification"
    columns = {"image": "image", "label": "label"}
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

        self.base, self.processor = load_classifier(self.model_path, **self.load_options())
        self.base = self.place(self.base)
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
