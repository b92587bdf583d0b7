"""Publishing to the Hub, against tests/hub_server.py: a real HTTP server on 127.0.0.1 with the Hub's routes.

That server does not cover LFS/Xet uploads (every file goes as a regular base64 upload), authentication (any token
is accepted), or the Hub's own YAML/model-card rules (validate-yaml only checks the front matter exists): those are
exercised only against the real Hub.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard

from pitome_hf import PiToMeViTForImageClassification

from .helpers import run_fresh
from .hub_server import HubServer

TOKEN = "hf_pitome_test_secret_0123456789"


@pytest.fixture(scope="module")
def pitome_folder(stock_vit_dir, tmp_path_factory):
    """The PiToMe variant of a stock ViT folder whose model card names its licence (convert records it; push's card
    inherits it)."""
    import shutil

    from pitome_hf.commands.convert import convert_checkpoint

    base = tmp_path_factory.mktemp("base") / "vit"
    shutil.copytree(stock_vit_dir, base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a stock ViT\n")
    return convert_checkpoint(str(base), tmp_path_factory.mktemp("conv") / "pitome_vit", keep_ratio=0.8)


@pytest.fixture(scope="module")
def eval_report(pitome_folder):
    return {
        "schema": "pitome_hf.evaluation.evaluate/1", "task": "image-classification", "model": str(pitome_folder),
        "dataset": {"path": "zalando-datasets/fashion_mnist", "split": "test", "image_column": "image",
                    "label_column": "label"},
        "dataset_fingerprint": "datasets:0123456789abcdef",  # what evaluate records for a Hub dataset
        "num_samples": 100, "device": "cpu", "num_processes": 1, "dtype": "float32", "batch_size": 50,
        "results": [
            {"method": m, "keep_ratio": r, "metrics": {"accuracy": a}, "gflops": g, "images_per_s": 100.0,
             "peak_memory_mb": 10.0, "num_samples": 100, "token_counts": []}
            for m, r, a, g in [("none", 1.0, 0.91, 0.5), ("tome", 0.8, 0.85, 0.3), ("pitome", 0.8, 0.875, 0.3)]
        ],
    }


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


def push_cli(hub, tmp_path, *args):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "push_home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "pitome_hf.cli", "push", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=180)


def snapshot(hub, repo_id, rev="main"):
    repo = hub.state.repos[repo_id]
    return dict(repo["snapshots"][repo["branches"][rev]])


def test_push_then_fresh_process_loads_from_the_server(hub, pitome_folder, eval_report, tmp_path):
    report_path = tmp_path / "results.json"
    report_path.write_text(json.dumps(eval_report))
    done = push_cli(hub, tmp_path, pitome_folder, "org/vit-pitome", "--eval-json", report_path,
                    "--commit-message", "first upload", "--base-model", "google/vit-base-patch16-224")
    assert done.returncode == 0, done.stderr[-3000:]
    assert TOKEN not in done.stdout + done.stderr
    files = snapshot(hub, "org/vit-pitome")
    assert {"README.md", "config.json", "model.safetensors", "modeling_pitome_vit.py", "merging.py",
            "configuration_pitome_vit.py", "preprocessor_config.json"} <= set(files)
    assert hub.state.commits == 1  # one atomic commit
    assert all(TOKEN.encode() not in content for content in files.values())

    model = PiToMeViTForImageClassification.from_pretrained(pitome_folder).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(x).logits
    got = run_fresh(
        """
        import json, torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained("org/vit-pitome", trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained("org/vit-pitome")
        with torch.no_grad():
            logits = model(torch.load("x.pt")).logits
        print(json.dumps({"logits": logits.tolist(), "module": type(model).__module__,
                          "size": processor.size["height"]}))
        """,
        tmp_path,
        env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"},
    )
    assert got["module"].startswith("transformers_modules")
    assert torch.equal(torch.tensor(got["logits"]), expected)
    assert got["size"] == 64


def test_card_round_trips_and_carries_the_eval_numbers(pitome_folder, eval_report):
    from pitome_hf.commands.push import render_card

    card = render_card(pitome_folder, "org/vit-pitome", eval_report, base_model="google/vit-base-patch16-224",
                       license="apache-2.0")
    again = ModelCard(str(card))
    data = again.data
    assert data.base_model == "google/vit-base-patch16-224" and data.license == "apache-2.0"
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert {"pitome", "token-merging", "vit"} <= set(data.tags)
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [("accuracy", 0.875)]
    assert "trust_remote_code=True" in card.text and "2405.16148" in card.text
    assert "| pitome | 0.80 | 87.50 |" in card.text and "| tome | 0.80 | 85.00 |" in card.text
    assert "| keep_ratio | 0.8 |" in card.text


def test_report_without_this_setting_is_refused(pitome_folder, eval_report):
    from pitome_hf.commands.push import render_card

    other = {**eval_report, "results": [r for r in eval_report["results"] if r["method"] != "pitome"]}
    with pytest.raises(ValueError, match="no result for pitome at keep ratio 0.8"):
        render_card(pitome_folder, "org/x", other)


def test_overwrite_guard_holds_unless_forced(hub, pitome_folder, stock_vit_dir, tmp_path):
    hub.state.new_repo("org/stock", private=False)
    repo = hub.state.repos["org/stock"]
    stock_files = {p.name: p.read_bytes() for p in stock_vit_dir.iterdir() if p.is_file()}
    repo["snapshots"]["1" * 40] = stock_files  # a commit id, as the Hub's are (40 hex digits)
    repo["branches"]["main"] = "1" * 40
    refused = push_cli(hub, tmp_path, pitome_folder, "org/stock")
    assert refused.returncode == 2 and "already holds a 'vit' model" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert snapshot(hub, "org/stock") == stock_files
    forced = push_cli(hub, tmp_path, pitome_folder, "org/stock", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads(snapshot(hub, "org/stock")["config.json"])["model_type"] == "pitome_vit"


def test_failed_upload_leaves_the_repo_unchanged(hub, pitome_folder, tmp_path):
    first = push_cli(hub, tmp_path, pitome_folder, "org/vit-pitome")
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(hub, "org/vit-pitome")
    hub.state.fail_commits = True
    failed = push_cli(hub, tmp_path, pitome_folder, "org/vit-pitome", "--commit-message", "second")
    assert failed.returncode != 0
    assert TOKEN not in failed.stdout + failed.stderr
    assert snapshot(hub, "org/vit-pitome") == before


def test_branch_and_private_repo(hub, pitome_folder, tmp_path):
    done = push_cli(hub, tmp_path, pitome_folder, "org/private-pitome", "--private", "--revision", "exp")
    assert done.returncode == 0, done.stderr[-2000:]
    assert hub.state.repos["org/private-pitome"]["private"] is True
    assert "config.json" in snapshot(hub, "org/private-pitome", "exp")
    assert snapshot(hub, "org/private-pitome", "main") == {}


def test_non_pitome_folder_is_refused_before_any_request(hub, stock_vit_dir, tmp_path):
    refused = push_cli(hub, tmp_path, stock_vit_dir, "org/stock-vit")
    assert refused.returncode == 2 and "not a PiToMe one" in refused.stderr and "pitome-hf convert" in refused.stderr
    assert not hub.state.repos


# ------------------------------------------------------------------------------------------------------------------
# Nothing is sent that does not load or that belongs to another model; a failed commit leaves nothing behind
# ------------------------------------------------------------------------------------------------------------------
def _broken_copy(folder, tmp_path, name):
    import shutil

    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def test_truncated_weights_are_refused_before_any_request(hub, pitome_folder, tmp_path):
    broken = _broken_copy(pitome_folder, tmp_path, "truncated")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    refused = push_cli(hub, tmp_path, broken, "org/broken")
    assert refused.returncode == 1 and "does not load as remote code" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not hub.state.repos and not [r for r in hub.state.requests if r[0] in ("POST", "DELETE")]


def test_invalid_settings_in_config_json_are_refused(hub, pitome_folder, tmp_path):
    broken = _broken_copy(pitome_folder, tmp_path, "bad-config")
    config = json.loads((broken / "config.json").read_text())
    config["keep_ratio"] = 5
    (broken / "config.json").write_text(json.dumps(config))
    refused = push_cli(hub, tmp_path, broken, "org/bad")
    assert refused.returncode != 0 and "keep_ratio=5" in refused.stderr
    assert not hub.state.repos


@pytest.mark.parametrize("change, message", [
    (dict(model="/somewhere/else"), "measured '/somewhere/else', not this model"),
    (dict(task="vqa"), "is for the task 'vqa', but"),
])
def test_report_of_another_model_or_task_is_refused(hub, pitome_folder, eval_report, tmp_path, change, message):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**eval_report, **change}))
    refused = push_cli(hub, tmp_path, pitome_folder, "org/x", "--eval-json", path)
    assert refused.returncode == 2 and message in refused.stderr and not hub.state.repos


def test_insane_numbers_and_unreadable_reports_are_refused(pitome_folder, eval_report, tmp_path):
    from pitome_hf.commands.push import check_report, read_pitome_config

    config = read_pitome_config(pitome_folder)
    bad = json.loads(json.dumps(eval_report))
    bad["results"][2]["metrics"]["accuracy"] = 87.5  # a percentage where a fraction belongs
    with pytest.raises(ValueError, match="accuracy=87.5"):
        check_report(bad, pitome_folder, config)
    bad["results"][2]["metrics"]["accuracy"] = float("nan")
    with pytest.raises(ValueError, match="accuracy=nan"):
        check_report(bad, pitome_folder, config)
    with pytest.raises(ValueError, match="is a list"):
        check_report([eval_report], pitome_folder, config)
    from pitome_hf.cli import main as cli

    (tmp_path / "torn.json").write_text('{"schema": ')
    assert cli(["push", str(pitome_folder), "org/x", "--eval-json", str(tmp_path / "torn.json")]) == 2


def test_failed_commit_removes_the_repo_or_branch_it_created(hub, pitome_folder, tmp_path):
    hub.state.fail_commits = True
    failed = push_cli(hub, tmp_path, pitome_folder, "org/new-repo")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "org/new-repo" not in hub.state.repos  # created for this push, removed again
    hub.state.fail_commits = False
    assert push_cli(hub, tmp_path, pitome_folder, "org/kept").returncode == 0
    hub.state.fail_commits = True
    failed = push_cli(hub, tmp_path, pitome_folder, "org/kept", "--revision", "exp")
    assert failed.returncode == 1
    assert set(hub.state.repos["org/kept"]["branches"]) == {"main"}  # the branch it created is gone


def test_push_without_a_report_keeps_the_results_on_the_card(hub, pitome_folder, eval_report, tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(eval_report))
    assert push_cli(hub, tmp_path, pitome_folder, "org/keep", "--eval-json", path).returncode == 0
    assert push_cli(hub, tmp_path, pitome_folder, "org/keep").returncode == 0
    card = ModelCard(snapshot(hub, "org/keep")["README.md"].decode())
    assert "| pitome | 0.80 | 87.50 |" in card.text and card.data.eval_results[0].metric_value == 0.875
    assert push_cli(hub, tmp_path, pitome_folder, "org/keep", "--drop-results").returncode == 0
    card = ModelCard(snapshot(hub, "org/keep")["README.md"].decode())
    assert "No evaluation was attached" in card.text and not card.data.eval_results


def test_unreachable_hub_is_one_line(pitome_folder, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "home"), "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    done = subprocess.run([sys.executable, "-m", "pitome_hf.cli", "push", str(pitome_folder), "org/x"], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 1 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------------------
# A push replaces the previous model: its files go in the same commit, its results stay only if they are this model's
# ------------------------------------------------------------------------------------------------------------------
def seed_repo(hub, repo_id, files: dict):
    hub.state.new_repo(repo_id, private=False)
    repo = hub.state.repos[repo_id]
    repo["snapshots"]["5eed" * 10] = {k: v if isinstance(v, bytes) else v.encode() for k, v in files.items()}
    repo["branches"]["main"] = "5eed" * 10


PREVIOUS_CLIP = {
    ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "config.json": json.dumps({"model_type": "pitome_clip"}),
    "model.safetensors": b"old weights",
    "modeling_pitome_clip.py": "# the previous model's code\n",
    "tokenizer.json": "{}",
    "preprocessor_config.json": "{}",
    "README.md": "---\nlicense: mit\n---\n# old\n",
}


def test_previous_model_files_are_refused_or_deleted_in_the_same_commit(hub, pitome_folder, tmp_path):
    seed_repo(hub, "org/swap", PREVIOUS_CLIP)
    before = snapshot(hub, "org/swap")
    refused = push_cli(hub, tmp_path, pitome_folder, "org/swap", "--no-verify")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
    assert "org/swap holds files this folder lacks, left by an earlier upload (modeling_pitome_clip.py, " \
           "tokenizer.json): pass --delete-extra-files" in refused.stderr
    assert snapshot(hub, "org/swap") == before and hub.state.commits == 0
    done = push_cli(hub, tmp_path, pitome_folder, "org/swap", "--no-verify", "--delete-extra-files")
    assert done.returncode == 0, done.stderr[-2000:]
    files = snapshot(hub, "org/swap")
    local = {p.name for p in pitome_folder.iterdir() if p.is_file()}
    assert set(files) == local | {"README.md", ".gitattributes"} and hub.state.commits == 1
    assert files["model.safetensors"] == (pitome_folder / "model.safetensors").read_bytes()
    assert files["preprocessor_config.json"] == (pitome_folder / "preprocessor_config.json").read_bytes()


def test_results_are_kept_only_for_exactly_this_model_and_configuration(hub, pitome_folder, stock_vit_dir,
                                                                        eval_report, tmp_path):
    from pitome_hf.commands.convert import convert_checkpoint
    from pitome_hf.evaluation.evaluate import model_fingerprint

    path = tmp_path / "report.json"
    path.write_text(json.dumps(eval_report))
    assert push_cli(hub, tmp_path, pitome_folder, "org/cfg", "--no-verify", "--eval-json", path).returncode == 0
    card = ModelCard(snapshot(hub, "org/cfg")["README.md"].decode())
    assert card.data.to_dict()["pitome_fingerprint"] == model_fingerprint(pitome_folder)
    other = convert_checkpoint(str(stock_vit_dir), tmp_path / "keep05", keep_ratio=0.5)  # same weights, keep 0.5
    before = snapshot(hub, "org/cfg")
    refused = push_cli(hub, tmp_path, other, "org/cfg", "--no-verify", "--license", "apache-2.0")  # (a base without card)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "org/cfg's model card carries results measured on another model or configuration" in refused.stderr
    assert "--eval-json" in refused.stderr and "--drop-results" in refused.stderr
    assert snapshot(hub, "org/cfg") == before
    assert push_cli(hub, tmp_path, other, "org/cfg", "--no-verify", "--drop-results", "--license",
                    "apache-2.0").returncode == 0
    card = ModelCard(snapshot(hub, "org/cfg")["README.md"].decode())
    assert "No evaluation was attached" in card.text and not card.data.eval_results
    assert push_cli(hub, tmp_path, other, "org/cfg", "--no-verify", "--license",  # no results: nothing to keep
                    "apache-2.0").returncode == 0


def test_results_on_a_card_without_a_fingerprint_are_not_kept(hub, pitome_folder, eval_report, tmp_path):
    from pitome_hf.commands.push import render_card

    old = str(render_card(pitome_folder, "org/old", eval_report))  # a card from before fingerprints
    assert "pitome_fingerprint" not in old
    files = {p.name: p.read_bytes() for p in pitome_folder.iterdir() if p.is_file()}
    seed_repo(hub, "org/old", {**files, "README.md": old})
    refused = push_cli(hub, tmp_path, pitome_folder, "org/old", "--no-verify")
    assert refused.returncode == 2 and "carries results with no record of the model they were measured on" in \
        refused.stderr
    assert hub.state.commits == 0


def test_report_of_this_folder_before_it_was_replaced_is_refused(pitome_folder, stock_vit_dir, eval_report, tmp_path):
    import shutil

    from pitome_hf.commands.convert import convert_checkpoint
    from pitome_hf.evaluation.evaluate import model_fingerprint
    from pitome_hf.commands.push import check_report, read_json, read_pitome_config

    folder = tmp_path / "pitome"
    shutil.copytree(pitome_folder, folder)
    report = {**eval_report, "model": str(folder), "weights_fingerprint": model_fingerprint(folder, weights_only=True)}
    check_report(report, folder, read_pitome_config(folder))  # the same weights: accepted
    convert_checkpoint(str(stock_vit_dir), folder, keep_ratio=0.5, force=True)  # same weights, other settings
    check_report(report, folder, read_pitome_config(folder))
    weights = folder / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file({k: v + 1 for k, v in tensors.items()}, weights, metadata={"format": "pt"})  # another model there now
    with pytest.raises(ValueError, match=f"the evaluation report measured {folder} when it held other weights"):
        check_report(report, folder, read_pitome_config(folder))
    with pytest.raises(ValueError, match="--eval-json .* is a folder; give the JSON file in it"):
        read_json(tmp_path, "--eval-json")


def test_a_push_landing_between_the_checks_and_the_commit_is_not_overwritten(hub, pitome_folder, tmp_path):
    files = {p.name: p.read_bytes() for p in pitome_folder.iterdir() if p.is_file()}
    seed_repo(hub, "org/race", files)
    other = {**files, "modeling_other.py": b"# pushed by someone else meanwhile\n"}

    def someone_else_pushes():
        hub.state.before_commit = None
        repo = hub.state.repos["org/race"]
        repo["snapshots"]["0ther" * 8] = other
        repo["branches"]["main"] = "0ther" * 8

    hub.state.before_commit = someone_else_pushes
    raced = push_cli(hub, tmp_path, pitome_folder, "org/race", "--no-verify", "--delete-extra-files")
    assert raced.returncode == 1 and "org/race changed while this push checked it" in raced.stderr, raced.stderr[-2000:]
    assert snapshot(hub, "org/race") == other  # their file stays: our deletions were computed before it existed


def test_a_card_picks_its_own_row_from_a_report_with_visual_token_budgets():
    """Vision-language reports hold keep-ratio rows and budget rows (visual_tokens, no keep ratio): a folder reduced to
    K tokens takes the row of its method at K, a keep-ratio folder its keep-ratio row, a VisionZip-style folder the
    row labelled by its selection; budget rows never crash the keep-ratio match."""
    from pitome_hf.commands.push import _is_own_row

    rows = [dict(method="none", keep_ratio=1.0), dict(method="pitome", keep_ratio=0.5),
            dict(method="pitome", keep_ratio=None, visual_tokens=64), dict(method="tome", keep_ratio=None, visual_tokens=64),
            dict(method="visionzip", keep_ratio=None, visual_tokens=64)]
    pick = lambda config, label: [i for i, r in enumerate(rows) if _is_own_row(r, config, label)]  # noqa: E731
    assert pick(dict(keep_ratio=0.5), "pitome") == [1]
    assert pick(dict(keep_ratio=1.0, visual_tokens=64), "pitome") == [2]
    assert pick(dict(keep_ratio=1.0, visual_tokens=64), "tome") == [3]
    assert pick(dict(keep_ratio=1.0, visual_tokens=64, visual_selection="visionzip"), "pitome") == [4]
    assert pick(dict(keep_ratio=1.0, visual_tokens=128), "pitome") == []
    assert pick(dict(keep_ratio=1.0), "none") == [0]
