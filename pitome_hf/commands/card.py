"""The model card of `pitome-hf push`: reading the folder and the evaluation report, checking that the report belongs
to this model, the card's metadata (eval_results, `pitome_fingerprint`), its results table, and the results kept from
the card already on the Hub. `pitome_hf.commands.push` re-exports every name here (their old import path).

What the Hub reads from the card's metadata: `model-index` holds the results measured on a Hub dataset only, named
by its id verbatim (`dataset.type`/`dataset.name`, e.g. zalando-datasets/fashion_mnist, with `dataset.config` and
`dataset.split`), under the Hub's task id (`HUB_TASK_TYPES`); results on local data, and those of a task the Hub has
no id for (image-text retrieval), are in the text table only, which says so. `license` is --license, else the base's
(from its model card, read by convert, or from the Hub card of --base-model); a push with none known is refused,
asking for --license. The Hub's card spec (hub-docs modelcard.md) verifies `license` only when present, as an id of
its licence list, and wants `license_name` and `license_link` beside `license: other`: writing `other` for an unknown
licence would name a licence nobody gave, and a derivative published with none leaves its users none.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

from pitome_hf.checkpoints import HUB_ID
from pitome_hf.families import entry_for_config_dict, family_of, pitome_model_types
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merge_config import MergeSettings

CITATION = """@inproceedings{tran2024pitome,
  title     = {Accelerating Transformers with Spectrum-Preserving Token Merging},
  author    = {Tran, Hoai-Chau and Nguyen, Duy M. H. and Nguyen, Duy M. and Nguyen, Trung-Tin and Le, Ngan and
               Xie, Pengtao and Sonntag, Daniel and Zou, James Y. and Nguyen, Binh T. and Niepert, Mathias},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2405.16148}
}"""
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ base_model_line }} with **PiToMe** token merging (Tran et al., NeurIPS 2024): between attention and MLP, each
layer merges the tokens that sit in large clusters of look-alikes (high energy) and protects isolated, informative
ones, so later layers run on fewer tokens. Weights are unchanged; the merge settings live in `config.json`.

## Merge settings

| setting | value |
|---|---|
{{ settings_rows }}

Tokens per layer (mergeable tokens entering layer 0, then after each layer): {{ schedule }}.

## Usage

```python
from transformers import {{ auto_class }}

model = {{ auto_class }}.from_pretrained("{{ repo_id }}", trust_remote_code=True)
outputs = model(**inputs)          # outputs.token_counts: tokens per layer; outputs.token_sizes: merged sizes
```

Change the merge settings at load time, e.g. `from_pretrained(..., trust_remote_code=True, keep_ratio=0.95)`, or
`merge_method="none"` for the unmerged model. Made with pitome_hf.
{{ onnx_section }}
## Results

{{ results }}

## Citation

```bibtex
{{ citation }}
```
"""


def read_json(path, what: str):
    """A JSON file's content, or a ValueError naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give the JSON file in it (e.g. {path / 'results.json'}).")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} is not valid JSON ({error}).") from None


def read_pitome_config(folder: Path) -> dict:
    """config.json of a PiToMe checkpoint folder, or a ValueError saying what is missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give the folder written by `pitome-hf convert`.")
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no config.json: not a model folder.")
    config = read_json(path, "config file")
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a config object.")
    model_type = config.get("model_type", "")
    if model_type not in pitome_model_types():
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not a PiToMe one ({', '.join(pitome_model_types())}): "
            "convert it first with `pitome-hf convert`."
        )
    if not config.get("auto_map"):
        raise ValueError(f"{folder}/config.json has no auto_map: trust_remote_code could not load it.")
    code = {v.split(".")[0] + ".py" for v in config["auto_map"].values()}
    missing = sorted(c for c in code if not (folder / c).is_file())
    if missing:
        raise ValueError(f"{folder} lacks the code files {missing} named by its auto_map.")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ValueError(f"{folder} has no weights (*.safetensors).")
    return config


NO_RESULTS = "No evaluation was attached to this upload. Run `pitome-hf evaluate --model <this repo>`."
# evaluate's task -> the Hub's task id (PIPELINE_DATA of the Hub's task list) for the card's model-index. A task the
# Hub has no id for (image-text retrieval: the Hub's "text-retrieval" is text-only, "visual-document-retrieval" is
# about document pages) is kept out of model-index; its results stay in the card's text table.
HUB_TASK_TYPES = {"image-classification": "image-classification",
                  "zero-shot-image-classification": "zero-shot-image-classification",
                  "vqa": "visual-question-answering"}
HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # name or namespace/name


def hub_dataset(report: dict) -> Optional[dict]:
    """{"id", "config", "split"} of the Hub dataset a report measured, or None when it measured local data. Local
    when the report's dataset fingerprint is a hash of local files (evaluate writes `datasets:...` only for what the
    datasets library loaded from the Hub); without a fingerprint, when the path is a file name, an absolute or
    relative path, or anything but a Hub id (`name` or `namespace/name`)."""
    dataset = report["dataset"]
    path = str(dataset.get("path") or "")
    fingerprint = report.get("dataset_fingerprint")
    if fingerprint:
        hub = str(fingerprint).startswith("datasets:")
    else:
        hub = bool(HUB_DATASET_ID.match(path)) and Path(path).suffix.lower() not in (
            ".npz", ".parquet", ".csv", ".json", ".jsonl", ".arrow", ".txt") and not Path(path).expanduser().exists()
    if not hub:
        return None
    return {"id": path, "config": dataset.get("config") or None, "split": dataset.get("split") or None}


def _is_own_row(row: dict, config: dict, label: str) -> bool:
    """Whether a report row measured this folder's setting: its method (a VisionZip-style row is labelled by its
    selection) and its budget, a visual-token count (vision-language families) or else a keep ratio."""
    selection = config.get("visual_selection", "merge")  # `label` may be the method's or, as evaluate's, the selection's
    method = selection if selection not in (None, "merge") and label != "none" else label
    if row["method"] != method:
        return False
    tokens = config.get("visual_tokens")
    if tokens is not None:
        return row.get("visual_tokens") == tokens
    ratio = row.get("keep_ratio")
    return row.get("visual_tokens") is None and ratio is not None and abs(ratio - float(config.get("keep_ratio", 1.0))) < 1e-9


def _results_section(report: Optional[dict], config: dict, label: str) -> tuple[str, list]:
    """Markdown table of the evaluation report and the EvalResult entries for this model's own setting."""
    from huggingface_hub import EvalResult

    from pitome_hf.evaluation.report import markdown_table, primary_metric, validate_report

    if report is None:
        return NO_RESULTS, []
    validate_report(report)
    own = [r for r in report["results"] if _is_own_row(r, config, label)]
    if not own:
        have = sorted({(r["method"], r.get("keep_ratio"), r.get("visual_tokens")) for r in report["results"]}, key=str)
        budget = (f"{config['visual_tokens']} visual tokens" if config.get("visual_tokens") is not None
                  else f"keep ratio {float(config.get('keep_ratio', 1.0))}")
        raise ValueError(f"the evaluation report has no result for {label} at {budget}; it has (method, keep ratio, "
                         f"visual tokens) {have}.")
    metric = primary_metric(report)
    dataset = report["dataset"]
    hub = hub_dataset(report)
    task_type = HUB_TASK_TYPES.get(report["task"])
    entries = [
        EvalResult(task_type=task_type, dataset_type=hub["id"], dataset_name=hub["id"], dataset_config=hub["config"],
                   dataset_split=hub["split"], metric_type=m, metric_name=m, metric_value=float(v))
        for m, v in own[0]["metrics"].items()
    ] if hub and task_type else []
    if hub:
        where = (f"the Hub dataset [{hub['id']}](https://huggingface.co/datasets/{hub['id']})"
                 + (f" (config {hub['config']})" if hub["config"] else "") + f", split {hub['split'] or 'test'}")
    else:
        where = (f"the local data `{Path(str(dataset['path'])).name}`"
                 + (f" (split {dataset['split']})" if dataset.get("split") else ""))
    outside = ("" if entries else " These results are not in the card's model-index: "
               + ("the data is not a Hub dataset." if not hub else
                  f"the Hub has no task id for {report['task']}."))
    text = (
        f"Measured by `pitome-hf evaluate` on {where}, {report['num_samples']} samples, "
        f"{report['device']}, {report['dtype']}, batch {report['batch_size']}; {metric} next to ToMe and the "
        f"unmerged model. GFLOPs per sample are analytic; images/s are measured.{outside}\n\n" + markdown_table(report)
    )
    return text, entries


def resolve_license(config: dict, license: Optional[str] = None, base_model: Optional[str] = None,
                    token: Optional[str] = None) -> Optional[str]:
    """The card's licence: `license` (--license), else the one convert read from the base's card
    (`pitome_base_license` in config.json), else the licence on the Hub card of `base_model` (a Hub id; None when
    offline, missing or unreadable), else None (push then asks for --license)."""
    if license:
        return license
    if config.get("pitome_base_license"):
        return config["pitome_base_license"]
    base = base_model or config.get("pitome_base_model")
    if base and HUB_ID.match(str(base)) and not Path(str(base)).exists():
        from huggingface_hub import ModelCard

        try:
            return ModelCard.load(str(base), token=token).data.license or None
        except Exception:  # no card, offline, or unreadable: the licence stays unknown
            return None
    return None


def render_card(folder: Path, repo_id: str, report: Optional[dict] = None, base_model: Optional[str] = None,
                license: Optional[str] = None, kept: tuple = (None, None), fingerprint: Optional[str] = None,
                onnx_metadata: Optional[dict] = None):
    """The model card (a huggingface_hub ModelCard) for a PiToMe checkpoint folder. `kept`: (results text,
    eval_results) of the card already on the Hub, used when no report is given. `fingerprint`: the folder's
    `model_fingerprint`, recorded in the card's metadata as `pitome_fingerprint` (the model its results belong to).
    `onnx_metadata`: the `pitome_hf.*` metadata of a `model.onnx` uploaded beside the weights (the card names it)."""
    from huggingface_hub import ModelCard, ModelCardData

    from pitome_hf.modeling.merge_config import MERGE_FIELDS, token_schedule

    config = read_pitome_config(folder)
    entry = entry_for_config_dict(config)
    pipeline_tag, family = entry.pipeline_tag, family_of(config["model_type"]).name
    auto_class = entry.autos[0] if entry.autos else "AutoModel"
    base_model = base_model or config.get("pitome_base_model") or None
    license = license or config.get("pitome_base_license") or None
    config_object = _config_object(folder)  # loaded once: the label, the settings rows and the schedule read it
    settings = MergeSettings.from_config(config_object)
    results, entries = _results_section(report, config, settings.label())
    if report is None and kept[0]:
        results, entries = kept[0], list(kept[1] or [])
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        tags=["pitome", "token-merging", family],
        datasets=None,
        metrics=sorted({e.metric_type for e in entries}) or None,
        model_name=repo_id.split("/")[-1],
        eval_results=entries or None,
        pitome_fingerprint=fingerprint,
    )
    rows = f"| configuration | {settings.label()} |\n" + "\n".join(
        f"| {k} | {config.get(k)} |" for k in MERGE_FIELDS if k in config and k != "trace_source")
    try:
        schedule = token_schedule(config_object)
    except ValueError:  # a config without image geometry (text models) has no static schedule
        schedule = "depends on the input length"
    base_line = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "A Transformer"
    if base_model and not HUB_ID.match(base_model):  # a folder name is no Hub page: no link, no base_model metadata
        base_line, data.base_model = f"`{base_model}`", None
    return ModelCard.from_template(
        data,
        template_str=CARD_TEMPLATE,
        model_name=repo_id.split("/")[-1],
        base_model_line=base_line,
        settings_rows=rows,
        schedule=schedule,
        auto_class=auto_class,
        repo_id=repo_id,
        results=results,
        citation=CITATION,
        onnx_section=_onnx_section(onnx_metadata, repo_id),
    )


def _onnx_section(meta: Optional[dict], repo_id: str) -> str:
    """The card's paragraph on the uploaded `model.onnx` (empty without one)."""
    if not meta:
        return ""
    return (f"\n## ONNX\n\n`model.onnx` is this model exported by `pitome-hf export` as a static graph (the same merge "
            f"settings; tokens per layer {meta.get('token_schedule')}): input {meta.get('input')}. Checked before "
            "upload: it loads in ONNX Runtime and matches PyTorch on a dummy input.\n\n```python\nimport onnxruntime "
            "as ort\nfrom huggingface_hub import hf_hub_download\n\nsession = ort.InferenceSession(hf_hub_download("
            + json.dumps(repo_id) + ', "model.onnx"))\noutputs = session.run(None, {"pixel_values": pixel_values})'
            "   # float32 numpy\n"
            "```\n")


def _config_object(folder: Path):
    import pitome_hf  # noqa: F401  (importing the package registers the PiToMe configs)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder))


METRICS_IN_UNIT_RANGE = ("accuracy", "recall", "vqa")  # metric names (prefixes) that are fractions in [0, 1]


def check_report(report: dict, folder: Path, config: dict) -> dict:
    """The evaluation report belongs to this model and its numbers are sane; returns it, or raises ValueError saying
    what differs (model, task, family, configuration, or the bad value)."""
    from pitome_hf.evaluation.report import validate_report

    if not isinstance(report, dict):
        raise ValueError(f"the evaluation report is a {type(report).__name__}, not a pitome_hf results.json object.")
    validate_report(report)
    family = family_of(config["model_type"])
    if report["task"] not in family.tasks:
        raise ValueError(
            f"the evaluation report is for the task {report['task']!r}, but {folder} is a {family.name} model "
            f"(its tasks: {', '.join(family.tasks) or 'none'}): attach a report of this model."
        )
    model = str(report.get("model", ""))
    names = {str(folder), str(folder.resolve()), folder.name, str(config.get("pitome_base_model") or "")} - {""}
    same = model in names or (Path(model).exists() and Path(model).resolve() == folder.resolve())
    if not same:
        raise ValueError(
            f"the evaluation report measured {model!r}, not this model ({folder}"
            + (f" or its base {config['pitome_base_model']!r}" if config.get("pitome_base_model") else "")
            + "): attach the report of `pitome-hf evaluate --model` on this folder."
        )
    _check_same_weights(report, folder)
    for i, row in enumerate(report["results"]):
        for name, value in row["metrics"].items():
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            if ok and name.startswith(METRICS_IN_UNIT_RANGE):
                ok = 0.0 <= value <= 1.0
            if not ok:
                raise ValueError(f"the evaluation report's result {i} ({row['method']}) has {name}={value!r}: not a "
                                 "finite value in the metric's range.")
        for name in ("gflops", "images_per_s"):
            value = row[name]
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"the evaluation report's result {i} has {name}={value!r}: expected a finite number "
                                 ">= 0.")
    return report


def _check_same_weights(report: dict, folder: Path) -> None:
    """A report that measured this very folder and recorded its weights' hash (`weights_fingerprint`) must match the
    weights there now: a folder replaced since the evaluation is refused (ValueError)."""
    from pitome_hf.evaluation.fingerprints import model_fingerprint

    recorded, model = report.get("weights_fingerprint"), str(report.get("model", ""))
    if not recorded or not Path(model).exists() or Path(model).resolve() != folder.resolve():
        return
    now = model_fingerprint(folder, weights_only=True)
    if now != recorded:
        raise ValueError(f"the evaluation report measured {model} when it held other weights ({recorded[:19]}... "
                         f"then, {now[:19]}... now): the folder was replaced since; evaluate it again.")


def _existing_card(repo_id: str, revision: Optional[str], token: Optional[str]):
    """(results section text, eval_results, pitome_fingerprint) of the card already on the Hub, or (None, None,
    None) when there is none."""
    from huggingface_hub import ModelCard, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        path = hf_hub_download(repo_id, "README.md", revision=revision, token=token)
    except (RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError):
        return None, None, None
    card = ModelCard(Path(path).read_text())
    match = re.search(r"\n## Results\n\n(.*?)\n## ", card.text, flags=re.S)
    return (match.group(1).strip() if match else None), card.data.eval_results, card.data.to_dict().get(
        "pitome_fingerprint")


def kept_results(repo_id: str, revision: Optional[str], token: Optional[str], fingerprint: str):
    """(results text, eval_results) of the card on the Hub, to keep on a push without a report. Kept only when the
    card records that they were measured for exactly this model and configuration (the same `model_fingerprint`:
    config, weights, code, processor files); a card whose results belong to anything else is refused (ValueError)."""
    text, entries, recorded = _existing_card(repo_id, revision, token)
    has_results = bool(entries) or bool(text and not text.startswith(NO_RESULTS[:20]))
    if not has_results:
        return None, None
    if recorded != fingerprint:
        whose = ("with no record of the model they were measured on" if not recorded else
                 f"measured on another model or configuration (card {recorded[:19]}..., this folder "
                 f"{fingerprint[:19]}...)")
        raise ValueError(f"{repo_id}'s model card carries results {whose}: they cannot describe this upload. Attach "
                         "this folder's report with --eval-json, or pass --drop-results to publish without results.")
    return text, entries
