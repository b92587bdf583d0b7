"""Publishing PiToMe variants to the Hugging Face Hub: a model card with measured results, one atomic commit.

    pitome-hf push DIR org/name [--eval-json out/evaluate/results.json] [--private] [--revision BRANCH]

The folder must hold a PiToMe checkpoint (config.json with a pitome_* model_type and auto_map, the weights and the
flat code files), as written by `pitome-hf convert` or `save_pretrained`. Everything, README.md included, goes up in
a single commit, so a failed upload leaves the repo as it was. The token is read by huggingface_hub (HF_TOKEN or the
login cache) and is never printed or written anywhere by this module.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .modeling.merging import MergeSettings

PIPELINE_TAGS = {  # model_type -> (pipeline_tag, family tag, Auto class for the usage snippet)
    "pitome_vit": ("image-classification", "vit", "AutoModelForImageClassification"),
    "pitome_clip": ("zero-shot-image-classification", "clip", "AutoModel"),
    "pitome_llava": ("image-text-to-text", "llava", "AutoModelForImageTextToText"),
    "pitome_bert": ("feature-extraction", "bert", "AutoModel"),
    "pitome_dinov2": ("image-feature-extraction", "dinov2", "AutoModel"),
}
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
`merge_method="none"` for the unmerged model. Made with [pitome_hf](https://pypi.org/project/pitome-hf/).

## Results

{{ results }}

## Citation

```bibtex
{{ citation }}
```
"""


def read_pitome_config(folder: Path) -> dict:
    """config.json of a PiToMe checkpoint folder, or a ValueError saying what is missing."""
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no config.json: not a model folder.")
    config = json.loads(path.read_text())
    model_type = config.get("model_type", "")
    if model_type not in PIPELINE_TAGS:
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not a PiToMe one ({', '.join(PIPELINE_TAGS)}): "
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


HUB_TASK_TYPES = {"vqa": "visual-question-answering"}  # evaluate's task names where the Hub's task id differs


def _results_section(report: Optional[dict], config: dict, folder: Path) -> tuple[str, list]:
    """Markdown table of the evaluation report and the EvalResult entries for this model's own setting."""
    from huggingface_hub import EvalResult

    from .evaluation import markdown_table, primary_metric, validate_report

    if report is None:
        return "No evaluation was attached to this upload. Run `pitome-hf evaluate --model <this repo>`.", []
    validate_report(report)
    method, ratio = MergeSettings.from_config(_config_object(folder)).label(), float(config.get("keep_ratio", 1.0))
    own = [r for r in report["results"] if r["method"] == method and abs(r["keep_ratio"] - ratio) < 1e-9]
    if not own:
        have = sorted({(r["method"], r["keep_ratio"]) for r in report["results"]})
        raise ValueError(f"the evaluation report has no result for {method} at keep ratio {ratio}; it has {have}.")
    metric = primary_metric(report)
    dataset = report["dataset"]
    name = Path(dataset["path"]).name
    entries = [
        EvalResult(task_type=HUB_TASK_TYPES.get(report["task"], report["task"]), dataset_type=name, dataset_name=name, dataset_split=dataset["split"],
                   metric_type=m, metric_name=m, metric_value=float(v))
        for m, v in own[0]["metrics"].items()
    ]
    text = (
        f"Measured by `pitome-hf evaluate` on {name} ({dataset['split']}, {report['num_samples']} samples), "
        f"{report['device']}, {report['dtype']}, batch {report['batch_size']}; {metric} next to ToMe and the "
        f"unmerged model. GFLOPs per sample are analytic; images/s are measured.\n\n" + markdown_table(report)
    )
    return text, entries


def render_card(folder: Path, repo_id: str, report: Optional[dict] = None, base_model: Optional[str] = None,
                license: Optional[str] = None):
    """The model card (a huggingface_hub ModelCard) for a PiToMe checkpoint folder."""
    from huggingface_hub import ModelCard, ModelCardData

    from .modeling.merging import MERGE_FIELDS, token_schedule

    config = read_pitome_config(folder)
    pipeline_tag, family, auto_class = PIPELINE_TAGS[config["model_type"]]
    base_model = base_model or config.get("pitome_base_model") or None
    license = license or config.get("pitome_base_license") or None
    results, entries = _results_section(report, config, folder)
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
    )
    settings = MergeSettings.from_config(_config_object(folder))
    rows = f"| configuration | {settings.label()} |\n" + "\n".join(
        f"| {k} | {config.get(k)} |" for k in MERGE_FIELDS if k in config and k != "trace_source")
    try:
        schedule = token_schedule(_config_object(folder))
    except ValueError:  # a config without image geometry (text models) has no static schedule
        schedule = "depends on the input length"
    base_line = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "A Transformer"
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
    )


def _config_object(folder: Path):
    from . import _auto  # noqa: F401  (registers the PiToMe configs)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder))


def push(folder, repo_id: str, *, eval_report: Optional[dict] = None, private: bool = False,
         revision: Optional[str] = None, commit_message: Optional[str] = None, force: bool = False,
         base_model: Optional[str] = None, license: Optional[str] = None, token: Optional[str] = None):
    """Create `repo_id` (if needed) and upload the folder plus a rendered README.md in one commit.

    Refuses to overwrite a repo whose config.json is not a PiToMe model unless `force`. The card is validated (locally
    by round-tripping its metadata, and by the Hub's validate-yaml route) before anything is uploaded."""
    from huggingface_hub import HfApi, ModelCard, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    folder = Path(folder)
    card = render_card(folder, repo_id, eval_report, base_model, license)
    round_trip = ModelCard(str(card)).data.to_dict()
    if round_trip.get("model-index") is None and eval_report is not None:
        raise ValueError("the rendered card lost its model-index on a round trip; not uploading.")
    api = HfApi(token=token)
    try:
        existing = hf_hub_download(repo_id, "config.json", revision=revision, token=token)
        model_type = json.loads(Path(existing).read_text()).get("model_type")
        if model_type not in PIPELINE_TAGS and not force:
            raise ValueError(
                f"{repo_id} already holds a {model_type!r} model, not a PiToMe one; refusing to overwrite it. "
                "Pass force=True (--force) to replace it."
            )
    except (RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError):
        pass
    card.validate(repo_type="model")
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        for item in folder.iterdir():
            if item.is_file() and item.name != "README.md":
                shutil.copy2(item, staging / item.name)
        (staging / "README.md").write_text(str(card))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload PiToMe model ({card.data.pipeline_tag})",
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("repo_id", help="org/name on the Hub")
    parser.add_argument("--eval-json", default=None, help="results.json from `pitome-hf evaluate`")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--license", default=None)
    parser.add_argument("--force", action="store_true", help="overwrite a repo that holds a non-PiToMe model")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.eval_json).read_text()) if args.eval_json else None
    info = push(args.folder, args.repo_id, eval_report=report, private=args.private, revision=args.revision,
                commit_message=args.commit_message, force=args.force, base_model=args.base_model,
                license=args.license)
    print(f"pushed {args.folder} to {args.repo_id}: {info.commit_url if hasattr(info, 'commit_url') else info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
