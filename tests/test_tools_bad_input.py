"""`pitome-hf evaluate` given bad input (issue 23): every refusal is one line naming the value and what is allowed,
before anything is measured or written; the journal resumes only rows of the same model files, data and settings."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pitome_hf.cli import main as cli
from pitome_hf.evaluation.evaluate import DataSpec, RowJournal, evaluate_model, load_data

RNG = np.random.default_rng(0)
IMAGES = (RNG.random((6, 32, 32, 3)) * 255).astype("uint8")
MODEL_LABELS = {0: "fox", 1: "cat", 2: "dog", 3: "owl"}


def save_model(folder, seed=0, labels=MODEL_LABELS):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, id2label=labels, label2id={v: k for k, v in labels.items()})
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("bad_input") / "model")


def npz(path, labels, classes=None, images=IMAGES):
    arrays = {"images": images, "labels": np.asarray(labels)}
    if classes is not None:
        arrays["classes"] = np.asarray(classes)
    np.savez(path, **arrays)
    return path


def run_cli(capsys, *args):
    """(exit code, the one stderr line) of `pitome-hf evaluate ARGS`; fails when the error is not one line."""
    code = cli(["evaluate", "--no-progress", *map(str, args)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pitome-hf evaluate: error")]
    assert code == 0 or len(err) == 1, err
    return code, err[0] if err else ""


# ------------------------------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, fragment", [
    ([0, 1, -1, 2, 0, 1], "row 2 of the label column 'label' holds label -1, which is not a class id: the model has 4 "
                          "classes, so labels must be 0..3; -1 marks an unlabelled row"),
    ([0, 1, 2, 7, 0, 1], "row 3 of the label column 'label' holds label 7, which is not a class id: the model has 4 "
                         "classes, so labels must be 0..3."),
])
def test_labels_that_are_no_class_id_are_refused_and_nothing_is_written(model, tmp_path, capsys, labels, fragment):
    data = npz(tmp_path / "bad.npz", labels)
    code, err = run_cli(capsys, "--model", model, "--dataset", data, "--keep-ratios", "0.9", "--out", tmp_path / "out")
    assert code == 2 and fragment in err
    assert not (tmp_path / "out" / "results.json").exists() and not (tmp_path / "out" / "rows.jsonl").exists()


def test_class_names_the_model_lacks_are_refused_unless_labels_by_id(model, tmp_path, capsys):
    data = npz(tmp_path / "other.npz", [0, 1, 2, 2, 0, 1], classes=["wolf", "bear", "eel"])
    code, err = run_cli(capsys, "--model", model, "--dataset", data, "--keep-ratios", "0.9", "--out", tmp_path / "a")
    assert code == 2 and "the dataset's class 'wolf' (3 of its 3 class names) is not among the model's 4 labels " \
                          "(fox, cat, dog, owl): the classes do not match" in err and "--labels-by-id" in err
    partial = npz(tmp_path / "partial.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "wolf", "dog"])
    with pytest.raises(ValueError, match="the dataset's class 'wolf' .1 of its 3 class names."):
        evaluate_model(model=str(model), data=DataSpec(str(partial)), keep_ratios=[0.9], progress=False)
    code, _ = run_cli(capsys, "--model", model, "--dataset", data, "--keep-ratios", "0.9", "--out", tmp_path / "b",
                      "--labels-by-id")
    report = json.loads((tmp_path / "b" / "results.json").read_text())
    assert code == 0 and report["labels_by_id"] is True
    with pytest.raises(ValueError, match="--labels-by-id applies to image-classification only, not to the task vqa"):
        evaluate_model(model=str(model), task="vqa", labels_by_id=True, progress=False)
    with pytest.raises(SystemExit):
        cli(["evaluate", "--help"])
    assert "--labels-by-id" in capsys.readouterr().out


def test_labels_by_id_still_checks_the_range_and_names_match_in_any_order(model, tmp_path):
    data = npz(tmp_path / "many.npz", [0, 1, 2, 4, 0, 1], classes=["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="row 3 .* holds label 4, .* the model has 4 classes, so labels must be 0..3"):
        evaluate_model(model=str(model), data=DataSpec(str(data)), keep_ratios=[0.9], labels_by_id=True,
                       progress=False)
    # names matched case-insensitively, in the dataset's own order; a string label column becomes class names
    import datasets

    rows = {"image": [Image.fromarray(a) for a in IMAGES], "label": ["Dog", "cat", "fox", "dog", "cat", "fox"]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "s.parquet"))
    report = evaluate_model(model=str(model), data=DataSpec(str(tmp_path / "s.parquet")), methods=["none"],
                            keep_ratios=[0.9], progress=False)
    assert report["results"][0]["num_samples"] == 6


def test_float_and_empty_label_columns(model, tmp_path):
    import datasets

    def parquet(name, labels):
        rows = {"image": [Image.fromarray(a) for a in IMAGES[: len(labels)]], "label": labels}
        ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
        ds.to_parquet(str(tmp_path / name))
        return DataSpec(str(tmp_path / name))

    with pytest.raises(ValueError, match="row 1 of the label column 'label' holds 1.5, not a class id"):
        evaluate_model(model=str(model), data=parquet("f.parquet", [0.0, 1.5]), keep_ratios=[0.9], progress=False)
    with pytest.raises(ValueError, match="row 1 of the label column 'label' holds None, not a class id"):
        evaluate_model(model=str(model), data=parquet("n.parquet", [0, None]), keep_ratios=[0.9], progress=False)
    spec = parquet("i.parquet", [0, 1])
    spec.label_column = "image"  # the image column given as the labels
    with pytest.raises(ValueError, match="the label column 'image' holds Image.*not class ids or names"):
        evaluate_model(model=str(model), data=spec, keep_ratios=[0.9], progress=False)


# ------------------------------------------------------------------------------------------------------------------
# Device
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(model, tmp_path, capsys):
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    code, err = run_cli(capsys, "--model", model, "--dataset", data, "--device", "cuda", "--out", tmp_path / "o")
    assert code == 2 and "--device cuda: CUDA is not available on this machine" in err and "--device cpu" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("device, fragment", [("gpu", "--device 'gpu' is not a device: use cpu, cuda, cuda:N or mps"),
                                              ("meta", "--device 'meta' is not supported")])
def test_unknown_devices_are_refused(model, device, fragment):
    with pytest.raises(ValueError, match=fragment):
        evaluate_model(model=str(model), device=device, progress=False)


def test_the_device_used_is_recorded_in_the_report_and_every_row(model, tmp_path):
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    report = evaluate_model(model=str(model), data=DataSpec(str(data)), keep_ratios=[0.9], device="cpu",
                            progress=False)
    assert report["device"] == "cpu" and {r["device"] for r in report["results"]} == {"cpu"}


# ------------------------------------------------------------------------------------------------------------------
# The journal
# ------------------------------------------------------------------------------------------------------------------
def test_a_replaced_model_at_the_same_path_is_measured_again(model, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    args = dict(model=str(folder), data=DataSpec(str(data)), keep_ratios=[0.9], out_dir=tmp_path / "out")
    first = evaluate_model(**args)
    assert first["model_fingerprint"].startswith("sha256:") and first["dataset_fingerprint"].startswith("sha256:")
    capsys.readouterr()
    evaluate_model(**args)
    assert capsys.readouterr().err.count("reused from") == 3  # the same files: every row reused
    shutil.rmtree(folder)
    save_model(folder, seed=1)  # another model, same path
    third = evaluate_model(**args)
    err = capsys.readouterr().err
    assert "reused" not in err and "holds 3 rows of another run (model_fingerprint, weights_fingerprint differ)" in err
    assert third["model_fingerprint"] != first["model_fingerprint"]
    header = json.loads((tmp_path / "out" / "rows.jsonl").read_text().splitlines()[0])
    assert header["model_fingerprint"] == third["model_fingerprint"]
    npz(data, [1, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])  # the dataset's file changed in place
    evaluate_model(**args)
    assert "reused" not in capsys.readouterr().err


def test_rows_measured_by_other_code_are_measured_again(model, tmp_path, capsys, monkeypatch):
    """The journal's header holds a hash of pitome_hf's own code and the torch/transformers versions: after an upgrade
    (or a fix to the merge code) a stock checkpoint's rows are not reused."""
    from pitome_hf.evaluation import evaluate as evaluation

    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    args = dict(model=str(model), data=DataSpec(str(data)), keep_ratios=[0.9], out_dir=tmp_path / "out")
    first = evaluate_model(**args)
    assert first["code_fingerprint"].startswith("sha256:") and " transformers " in first["code_fingerprint"]
    capsys.readouterr()
    monkeypatch.setattr(evaluation, "code_fingerprint", lambda: "sha256:other torch 0 transformers 0")
    evaluate_model(**args)
    err = capsys.readouterr().err
    assert "reused" not in err and "(code_fingerprint differ" in err


def test_a_second_writer_is_refused_naming_the_lock(model, tmp_path, capsys):
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    holder = RowJournal(tmp_path / "out")  # as another evaluate would hold it
    try:
        code, err = run_cli(capsys, "--model", model, "--dataset", data, "--keep-ratios", "0.9", "--out",
                            tmp_path / "out")
        assert code == 1 and f"--output {tmp_path / 'out'} is in use by another pitome-hf evaluate" in err
        assert str(tmp_path / "out" / ".rows.lock") in err and "Nothing was run" in err
        assert not (tmp_path / "out" / "rows.jsonl").exists()
    finally:
        holder.close()
    code, _ = run_cli(capsys, "--model", model, "--dataset", data, "--keep-ratios", "0.9", "--out", tmp_path / "out")
    assert code == 0  # released: the next run goes ahead


def test_a_torn_journal_keeps_the_rows_before_the_tear(model, tmp_path, capsys):
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    args = dict(model=str(model), data=DataSpec(str(data)), keep_ratios=[0.9], out_dir=tmp_path)
    evaluate_model(**args)
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    (tmp_path / "rows.jsonl").write_text("\n".join(lines[:3] + [lines[3][:25]]) + "\n")  # killed mid-line
    capsys.readouterr()
    evaluate_model(**args)
    assert capsys.readouterr().err.count("reused from") == 2


# ------------------------------------------------------------------------------------------------------------------
# The sweep's arguments, the model's task, the data files
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, fragment", [
    (dict(keep_ratios=[0.9, 0.8, 0.90]), "--keep-ratios lists 0.9 more than once"),
    (dict(methods=["none", "tome", "tome"]), "--methods lists tome more than once"),
    (dict(presets=["paper", "paper"]), "--presets lists paper more than once"),
    (dict(methods=[], keep_ratios=[0.9]), "nothing to run"),
    (dict(max_new_tokens=0), "max_new_tokens=0 must be >= 1"),
])
def test_duplicate_or_empty_sweeps_are_refused(model, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        evaluate_model(model=str(model), progress=False, **kwargs)


@pytest.mark.parametrize("task", ["vqa", "image-text-retrieval", "zero-shot-image-classification"])
def test_a_model_of_another_task_is_named_before_the_dataset(model, task):
    """The embedded dataset has no question/answers/caption columns: the model's type is what is wrong."""
    with pytest.raises(ValueError, match=f"is a 'vit' model; the task {task} supports .* a 'vit' model serves "
                                         "image-classification: pass --task image-classification"):
        evaluate_model(model=str(model), task=task, progress=False)


@pytest.mark.parametrize("content, fragment", [
    (b"garbage" * 50, "is not a valid .npz file .numpy cannot read it"),
    (b"", "is not a valid .npz file"),
    ("npy", "holds a single array .a .npy."),
    ("no-labels", "lacks the arrays \\['labels'\\]"),
    ("floats", "images must be uint8"),
    ("class-range", "label 5 at row 1 is not a class id: 3 classes are named, so labels must be 0..2"),
])
def test_bad_npz_files_are_one_line(tmp_path, capsys, content, fragment):
    path = tmp_path / "data.npz"
    if content == "npy":
        with open(path, "wb") as f:
            np.save(f, IMAGES)
    elif content == "no-labels":
        np.savez(path, images=IMAGES)
    elif content == "floats":
        npz(path, [0] * 6, images=IMAGES.astype("float32"))
    elif content == "class-range":
        npz(path, [0, 5, 1, 1, 1, 1], classes=["a", "b", "c"])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=fragment) as error:
        load_data(DataSpec(str(path)))
    assert "pickle" not in str(error.value) and str(path) in str(error.value)


def test_missing_empty_or_unreadable_datasets(tmp_path):
    with pytest.raises(FileNotFoundError, match="--dataset ./nowhere/data does not exist"):
        load_data(DataSpec("./nowhere/data"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_data(DataSpec(str(tmp_path / "absent.parquet")))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt is a file evaluate cannot read"):
        load_data(DataSpec(str(tmp_path / "notes.txt")))
    with pytest.raises(ValueError, match="empty.npz has no rows: nothing to evaluate"):
        load_data(DataSpec(str(npz(tmp_path / "empty.npz", np.zeros(0, int), images=IMAGES[:0]))))
    with pytest.raises(ValueError, match="the image column 'label' holds Value.*not images"):
        load_data(DataSpec(str(npz(tmp_path / "ok.npz", [0] * 6)), image_column="label"))


def test_parquet_folder_with_split_files_reads_only_the_split(tmp_path):
    import datasets

    for split, n in (("train", 5), ("test", 2)):
        rows = {"image": [Image.fromarray(a) for a in IMAGES[:n]], "label": [0] * n}
        ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
        (tmp_path / "data").mkdir(exist_ok=True)
        ds.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    assert len(load_data(DataSpec(str(tmp_path), split="test"))) == 2
    assert len(load_data(DataSpec(str(tmp_path), split="train"))) == 5
    with pytest.raises(ValueError, match="--split validation: Unknown split"):
        load_data(DataSpec(str(tmp_path), split="validation"))


def test_a_table_of_image_paths_reads_them_relative_to_the_table(model, tmp_path):
    (tmp_path / "imgs").mkdir()
    for i, array in enumerate(IMAGES[:3]):
        Image.fromarray(array).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "t.csv").write_text("image,label\n" + "".join(f"imgs/{i}.png,{i}\n" for i in range(3)))
    report = evaluate_model(model=str(model), data=DataSpec(str(tmp_path / "t.csv")), methods=["none"],
                            keep_ratios=[0.9], progress=False)
    assert report["results"][0]["num_samples"] == 3


def test_vqa_answer_and_question_rows_are_checked():
    from pitome_hf.evaluation.tasks import vqa_answers

    assert vqa_answers(["yes", ["a", "b"]], "answers") == [["yes"], ["a", "b"]]
    for bad in ([], None, [1], 3):
        with pytest.raises(ValueError, match="row 1 of the answers column 'answers' holds"):
            vqa_answers(["yes", bad], "answers")


def test_flags_the_task_would_ignore_are_refused(model):
    with pytest.raises(ValueError, match="--text-column caption does not apply to the task image-classification .it "
                                         "reads image, label.; only image-text-retrieval, vqa read a text column"):
        evaluate_model(model=str(model), data=DataSpec(text_column="caption"), progress=False)
    with pytest.raises(ValueError, match="--prompt does not apply to the task image-classification; only "
                                         "zero-shot-image-classification, vqa take a prompt"):
        evaluate_model(model=str(model), prompt="a photo of a {}.", progress=False)


def test_prompts_must_have_one_slot_and_no_other_braces():
    from pitome_hf.evaluation.tasks import check_prompt

    check_prompt("a photo of a {}.", "zero-shot-image-classification")
    check_prompt("USER: <image>\n{} ASSISTANT:", "vqa", needs=("<image>",))
    for prompt in ("a photo", "a {} and a {}", "a {name}", "a {0} {"):
        with pytest.raises(ValueError, match="does not fit the task zero-shot-image-classification: it needs one '{}'"):
            check_prompt(prompt, "zero-shot-image-classification")
    with pytest.raises(ValueError, match="needs '<image>' and one '{}'"):
        check_prompt("USER: {} ASSISTANT:", "vqa", needs=("<image>",))


def test_out_inside_the_model_or_the_dataset_folder_is_refused(model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    for out in (folder, folder / "results"):
        with pytest.raises(ValueError, match=f"--output {out} is inside the model folder {folder}"):
            evaluate_model(model=str(folder), data=DataSpec(str(data)), out_dir=out, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model.iterdir())
    (tmp_path / "images" / "test" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="is inside the dataset folder"):
        evaluate_model(model=str(folder), data=DataSpec(str(tmp_path / "images")), out_dir=tmp_path / "images" / "o",
                       progress=False)


def test_folders_without_images_and_unreadable_images_are_named(model, tmp_path, capsys):
    (tmp_path / "empty" / "test" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "cat" / "notes.txt").write_text("no image here")
    with pytest.raises(ValueError, match="holds no images or parquet files for the split 'test'"):
        load_data(DataSpec(str(tmp_path / "empty")))
    for name in ("cat", "dog"):
        (tmp_path / "imgs" / "test" / name).mkdir(parents=True)
        Image.fromarray(IMAGES[0]).save(tmp_path / "imgs" / "test" / name / "0.png")
    broken = tmp_path / "imgs" / "test" / "dog" / "1.png"
    broken.write_bytes((tmp_path / "imgs" / "test" / "dog" / "0.png").read_bytes()[:80])  # truncated
    code, err = run_cli(capsys, "--model", model, "--dataset", tmp_path / "imgs", "--out", tmp_path / "out")
    assert code == 1 and "the image in row 2 of the column 'image'" in err and str(broken) in err


def test_retrieval_recall_refuses_bad_ks_and_non_finite_similarities():
    from pitome_hf.evaluation.retrieval import recall_at_k

    with pytest.raises(ValueError, match="ks=\\[0, 5\\]: each k must be an int >= 1"):
        recall_at_k(torch.eye(3), ks=(0, 5))
    sim = torch.eye(3)
    sim[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite values .first at image 1, text 2."):
        recall_at_k(sim)
    with pytest.raises(ValueError, match="nothing to rank"):
        recall_at_k(torch.zeros(0, 0))


def test_a_checkpoint_missing_weights_or_with_unreadable_ones_is_refused(model, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    headless = tmp_path / "headless"
    shutil.copytree(model, headless)
    tensors = load_file(headless / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("classifier")}, headless / "model.safetensors",
              metadata={"format": "pt"})
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    with pytest.raises(ValueError, match="headless does not load every weight into PiToMeViTForImageClassification "
                                         ".*'missing_keys': \\['classifier.bias', 'classifier.weight'\\]"):
        evaluate_model(model=str(headless), data=DataSpec(str(data)), progress=False)
    (headless / "model.safetensors").write_bytes(b"\x00" * 100)
    code, err = run_cli(capsys, "--model", headless, "--dataset", data, "--out", tmp_path / "out")
    assert code == 1 and f"the weights of {headless} cannot be read (SafetensorError" in err


def test_an_out_folder_whose_result_names_are_folders_is_refused_before_the_sweep(model, tmp_path):
    (tmp_path / "out" / "results.json").mkdir(parents=True)
    with pytest.raises(ValueError, match="results.json is not a file, so the results cannot be written there"):
        evaluate_model(model=str(model), out_dir=tmp_path / "out", progress=False)


def test_the_same_files_under_another_path_resume(model, tmp_path, capsys):
    data = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    evaluate_model(model=str(model), data=DataSpec(str(data)), keep_ratios=[0.9], out_dir=tmp_path / "out")
    shutil.copytree(model, tmp_path / "copy")
    shutil.copy(data, tmp_path / "copy.npz")
    capsys.readouterr()
    evaluate_model(model=str(tmp_path / "copy"), data=DataSpec(str(tmp_path / "copy.npz")), keep_ratios=[0.9],
                   out_dir=tmp_path / "out")
    assert capsys.readouterr().err.count("reused from") == 3  # rows depend on the files, not on where they lie


def test_rows_without_an_image_or_with_a_missing_image_file_are_named(model, tmp_path, capsys):
    import datasets

    rows = {"image": [Image.fromarray(IMAGES[0]), None, Image.fromarray(IMAGES[1])], "label": [0, 1, 2]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "n.parquet"))
    code, err = run_cli(capsys, "--model", model, "--dataset", tmp_path / "n.parquet", "--out", tmp_path / "o1")
    assert code == 2 and "row 1 of the image column 'image' holds no image (None)" in err
    Image.fromarray(IMAGES[0]).save(tmp_path / "a.png")
    (tmp_path / "t.csv").write_text("image,label\na.png,0\nmissing.png,1\n")
    code, err = run_cli(capsys, "--model", model, "--dataset", tmp_path / "t.csv", "--out", tmp_path / "o2")
    assert code == 1 and f"the image in row 1 of the column 'image' ({tmp_path / 'missing.png'}) cannot be read" in err


def test_split_is_refused_for_a_single_file(tmp_path):
    """A .npz (or one parquet/csv/json file) holds one split: --split would be silently ignored, so it is refused."""
    from pitome_hf.evaluation.evaluate import DEFAULT_DATASET, DataSpec, load_data

    assert len(load_data(DataSpec(str(DEFAULT_DATASET)))) == 10000
    with pytest.raises(ValueError, match="--split validation: .*fashion_mnist_test.npz is a single file"):
        load_data(DataSpec(str(DEFAULT_DATASET), split="validation"))


# ------------------------------------------------------------------------------------------------------------------
# Refusals leave --output as it was (issue #31)
# ------------------------------------------------------------------------------------------------------------------
def snapshot(folder):
    """Every entry under `folder` (hidden ones too) with the content of each file; None when it does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "folder") for p in folder.rglob("*")}


def refusals(model, tmp_path):
    """(arguments, exit code, words) of refusals at every stage: the sweep, the model's name, its family, the data, the
    task's model check, and the first row (an image missing), after --output is locked."""
    import datasets

    good = npz(tmp_path / "ok.npz", [0, 1, 2, 2, 0, 1], classes=["cat", "dog", "fox"])
    rows = {"image": [Image.fromarray(IMAGES[0]), None], "label": [0, 1]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "n.parquet"))
    base = ["--model", model, "--dataset", good]
    return [
        (["--visual-tokens", "64"], 2, "--visual-tokens applies to the families that reduce visual tokens at the "
                                       "language model's input (qwen2_5_vl, qwen3_vl, qwen3_5, llava_onevision)"),
        ([*base, "--visual-tokens", "64"], 2, "'vit' model, whose family does not read it: drop --visual-tokens"),
        ([*base, "--visual-selections", "visionzip"], 2, "drop --visual-selections"),
        ([*base, "--keep-ratios", "0.9", "0.9"], 2, "--keep-ratios lists 0.9 more than once"),
        (["--model", "qwen2_5_vl", "--dataset", good], 2, "--model qwen2_5_vl: no such folder, and not a Hub id"),
        ([*base, "--image-column", "picture"], 2, "the dataset has no image column 'picture'"),
        (["--model", model, "--dataset", npz(tmp_path / "wolf.npz", [0, 1, 2, 2, 0, 1], classes=["wolf", "a", "b"])],
         2, "the dataset's class 'wolf'"),
        (["--model", model, "--dataset", tmp_path / "n.parquet"], 2, "row 1 of the image column 'image' holds no image"),
    ]


@pytest.mark.parametrize("before", ["absent", "a folder holding an earlier run's files"])
def test_every_refusal_leaves_the_output_folder_as_it_was(model, tmp_path, capsys, before):
    out = tmp_path / "results" / "out"
    if before != "absent":
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("mine")
        (out / "rows.jsonl").write_text('{"schema": "another run"}\n')
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    was = snapshot(tmp_path / "results")
    for args, code, words in refusals(model, inputs):
        got, err = run_cli(capsys, *args, "--out", out)
        assert (got, words in err) == (code, True), (args, err)
        assert snapshot(tmp_path / "results") == was, args


def test_a_bare_name_that_is_no_folder_is_refused_without_asking_the_hub(capsys, monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    code, err = run_cli(capsys, "--model", "qwen2_5_vl", "--task", "vqa")
    assert code == 2 and ("--model qwen2_5_vl: no such folder, and not a Hub id (org/name) (qwen2_5_vl is a model "
                          "family of this package, not a checkpoint; pitome-hf benchmark qwen2_5_vl takes it). Give a "
                          "checkpoint folder or a Hub model id such as Qwen/Qwen2.5-VL-3B-Instruct.") in err
    code, err = run_cli(capsys, "--model", "my-vit")
    assert code == 2 and "--model my-vit: no such folder, and not a Hub id (org/name). Give a checkpoint" in err


@pytest.mark.parametrize("family, modes, allowed", [("qwen2_5_vl", ["onnx"], "eager"), ("llava", ["eager", "compiled"],
                                                                                       "eager")])
def test_benchmark_modes_a_family_does_not_run_are_named(capsys, family, modes, allowed):
    """`benchmark qwen2_5_vl --modes onnx` said only "unrecognized arguments" (issue 31): one line naming the mode,
    what the family runs and which benchmarks have it, before any model is built."""
    code = cli(["benchmark", family, "--modes", *modes])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1, err
    other = [m for m in modes if m != allowed]
    assert f"--modes {' '.join(other)}: `benchmark {family}` runs only {allowed} rows" in err[0]
    assert "are for the vision benchmarks: default, vit, " in err[0]
