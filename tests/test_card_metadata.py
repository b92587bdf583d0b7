"""Model-card metadata as the Hub reads it (issue 34): model-index names a Hub dataset by its id verbatim (with its
config and split), local data and tasks the Hub has no id for stay in the text table only, the licence is inherited
or asked for, and the Hub's own files (.gitattributes, .eval_results/) never count as a previous model's."""

import json

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from .test_hub import eval_report, hub, pitome_folder, push_cli, seed_repo, snapshot  # noqa: F401  (fixtures)


def _report(base: dict, **changes) -> dict:
    return json.loads(json.dumps(base)) | changes


def _parsed(card):
    """(license, model-index as huggingface_hub's eval-results helper parses it) of the card's text, or (license,
    None) without a model-index."""
    data = ModelCard(str(card)).data
    index = data.to_dict().get("model-index")
    return data.license, (model_index_to_eval_results(index)[1] if index else None)


def test_a_hub_dataset_is_named_by_its_id_with_config_and_split(pitome_folder, eval_report):  # noqa: F811
    from pitome_hf.commands.card import render_card

    report = _report(eval_report, dataset_fingerprint="datasets:0123abcd", dataset={
        "path": "zalando-datasets/fashion_mnist", "config": "fashion_mnist", "split": "test", "image_column": "image",
        "label_column": "label"})
    card = render_card(pitome_folder, "org/vit-pitome", report)
    license, results = _parsed(card)
    assert license == "apache-2.0"  # inherited from the base's card, which convert read
    assert [(r.task_type, r.dataset_type, r.dataset_name, r.dataset_config, r.dataset_split, r.metric_type,
             r.metric_value) for r in results] == [("image-classification", "zalando-datasets/fashion_mnist",
                                                    "zalando-datasets/fashion_mnist", "fashion_mnist", "test",
                                                    "accuracy", 0.875)]
    assert "the Hub dataset [zalando-datasets/fashion_mnist](https://huggingface.co/datasets/zalando-datasets/" \
           "fashion_mnist) (config fashion_mnist), split test" in card.text
    assert "not in the card's model-index" not in card.text
    # a canonical id without namespace stays as it is, and a report without a fingerprint is read from its path
    bare = _report(eval_report, dataset={"path": "cifar10", "split": "test"})
    bare.pop("dataset_fingerprint")
    assert [r.dataset_type for r in _parsed(render_card(pitome_folder, "org/v", bare))[1]] == ["cifar10"]


@pytest.mark.parametrize("path,fingerprint", [("fashion_mnist_test.npz", None),
                                              ("/data/fmnist/test.npz", "sha256:abcd"),
                                              ("org/folder", "sha256:abcd")])  # a local folder that looks like an id
def test_local_data_stays_in_the_text_table_not_in_model_index(pitome_folder, eval_report, path, fingerprint):  # noqa: F811
    from pitome_hf.commands.card import render_card

    report = _report(eval_report, dataset={"path": path, "split": None})
    report.pop("dataset_fingerprint")
    if fingerprint:
        report["dataset_fingerprint"] = fingerprint
    card = render_card(pitome_folder, "org/vit-pitome", report)
    assert _parsed(card)[1] is None and "model-index" not in str(card).split("\n---\n")[0]
    assert "| pitome | 0.80 | 87.50 |" in card.text  # the results are still on the card
    assert "not in the card's model-index: the data is not a Hub dataset" in card.text


def test_retrieval_has_no_hub_task_and_stays_out_of_model_index(pitome_folder, eval_report):  # noqa: F811
    from pitome_hf.commands.card import HUB_TASK_TYPES, render_card

    assert "image-text-retrieval" not in HUB_TASK_TYPES  # the Hub's task list has no image-text retrieval id
    report = _report(eval_report, task="image-text-retrieval", dataset_fingerprint="datasets:0123abcd",
                     dataset={"path": "nlphuji/flickr30k", "split": "test"})
    for row in report["results"]:
        row["metrics"] = {"recall@1": row["metrics"]["accuracy"], "recall@5": 0.95}
    card = render_card(pitome_folder, "org/clip-pitome", report)
    assert _parsed(card)[1] is None
    assert "the Hub has no task id for image-text-retrieval" in card.text and "87.50" in card.text
    vqa = _report(eval_report, task="vqa", dataset_fingerprint="datasets:0123abcd",
                  dataset={"path": "lmms-lab/VQAv2", "split": "validation"})
    assert [r.task_type for r in _parsed(render_card(pitome_folder, "org/v", vqa))[1]] == ["visual-question-answering"]


def test_no_licence_known_is_refused_in_one_line_and_the_flag_or_the_base_card_gives_it(  # noqa: F811
        hub, pitome_folder, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(pitome_folder, bare)
    config = json.loads((bare / "config.json").read_text())
    del config["pitome_base_license"]
    (bare / "config.json").write_text(json.dumps(config))
    refused = push_cli(hub, tmp_path, bare, "org/nolicence", "--no-verify")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
    assert f"{bare} has no licence on record" in refused.stderr and "pass --license ID" in refused.stderr
    assert "org/nolicence" not in hub.state.repos
    done = push_cli(hub, tmp_path, bare, "org/flag", "--no-verify", "--license", "mit")
    assert done.returncode == 0, done.stderr[-2000:]
    assert ModelCard(snapshot(hub, "org/flag")["README.md"].decode()).data.license == "mit"
    # a --base-model on the Hub: its card's licence
    seed_repo(hub, "base-org/vit", {"README.md": "---\nlicense: bsd-3-clause\n---\n# base\n", "config.json": "{}"})
    done = push_cli(hub, tmp_path, bare, "org/inherited", "--no-verify", "--base-model", "base-org/vit")
    assert done.returncode == 0, done.stderr[-2000:]
    data = ModelCard(snapshot(hub, "org/inherited")["README.md"].decode()).data
    assert data.license == "bsd-3-clause" and data.base_model == "base-org/vit"


def test_the_hubs_own_files_never_count_as_a_previous_models(hub, pitome_folder, tmp_path):  # noqa: F811
    own = {p.name: p.read_bytes() for p in pitome_folder.iterdir() if p.is_file()}
    hub_files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
                 ".eval_results/fashion_mnist.yaml": b"- dataset: {id: zalando-datasets/fashion_mnist}\n",
                 "README.md": b"---\nlicense: apache-2.0\n---\n# the Hub's card\n"}
    seed_repo(hub, "org/again", own | hub_files)
    done = push_cli(hub, tmp_path, pitome_folder, "org/again", "--no-verify")  # no --delete-extra-files needed
    assert done.returncode == 0, done.stderr[-2000:]
    files = snapshot(hub, "org/again")
    assert files[".eval_results/fashion_mnist.yaml"] == hub_files[".eval_results/fashion_mnist.yaml"]
    assert files[".gitattributes"] == hub_files[".gitattributes"] and b"PiToMe" in files["README.md"]
    # a previous model's file in a folder is still named
    seed_repo(hub, "org/old", own | hub_files | {"onnx/model.onnx": b"old"})
    refused = push_cli(hub, tmp_path, pitome_folder, "org/old", "--no-verify")
    assert refused.returncode == 2 and "left by an earlier upload (onnx/model.onnx)" in refused.stderr
