"""Publishing PiToMe variants to the Hugging Face Hub: a model card with measured results, one atomic commit.

    pitome-hf push DIR org/name [--eval-json out/evaluate/results.json] [--private] [--revision BRANCH]

The folder must hold a PiToMe checkpoint (config.json with a pitome_* model_type and auto_map, the weights and the
flat code files), as written by `pitome-hf convert` or `save_pretrained`. Everything, README.md included, goes up in
a single commit, so a failed upload leaves the repo as it was. Files on the repo that the folder lacks (a previous
model's code, weights or processor) are deleted in that commit with --delete-extra-files, and refuse the push without
it. Without --eval-json the card keeps its results only when it records this exact model and configuration (a hash
of the folder's config, weights, code and processor files, `pitome_fingerprint` in the card's metadata). The token is
read by huggingface_hub (HF_TOKEN or the login cache) and is never printed or written anywhere by this module.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Optional

from pitome_hf.checkpoints import HUB_ID
from pitome_hf.commands.card import (  # noqa: F401  (re-exported: the card's names keep their old import path)
    CARD_TEMPLATE,
    CITATION,
    HUB_TASK_TYPES,
    METRICS_IN_UNIT_RANGE,
    NO_RESULTS,
    _check_same_weights,
    _config_object,
    _existing_card,
    _is_own_row,
    _onnx_section,
    _results_section,
    check_report,
    kept_results,
    read_json,
    read_pitome_config,
    render_card,
    resolve_license,
)
from pitome_hf.families import entry_for_config_dict, family_of, pitome_model_types


class VerificationError(RuntimeError):
    """The folder does not load or run as a user would load it (a failure of the folder, not of the command line)."""


FULL_CHECK_MAX_BYTES = 1 << 30  # weights up to 1 GiB get the full load check; larger ones the bounded one


def full_check_max_bytes() -> int:
    """The weight size up to which `verify_loads` loads every weight: PITOME_HF_FULL_CHECK_MAX_BYTES, else 1 GiB."""
    value = os.environ.get("PITOME_HF_FULL_CHECK_MAX_BYTES")
    if value is None:
        return FULL_CHECK_MAX_BYTES
    if not value.isdigit():
        raise ValueError(f"PITOME_HF_FULL_CHECK_MAX_BYTES={value!r} is not a number of bytes; unset it or give one "
                         "(e.g. 1073741824).")
    return int(value)


def verify_loads(folder: Path, timeout: int = 900, max_full_bytes: Optional[int] = None,
                 keep_layers: Optional[int] = None) -> dict:
    """Load `folder` as a user would, where pitome_hf is not installed: remote code in a fresh Python process with an
    empty HF_HOME and no network, every weight (no missing, unexpected or mismatched keys), then one forward on a
    dummy input of the model's own size with finite outputs. Returns what the process reported; raises ValueError
    naming the problem.

    Weights above `max_full_bytes` (default: `full_check_max_bytes()`, 1 GiB) in .safetensors files get the
    bounded check instead (pitome_hf/commands/load_check.py, which says what it checks and what it does not): the
    files' headers against the model built on the meta device, then the forward on the model's first layers, so the
    memory it needs does not grow with the model's depth (`keep_layers`: the layers kept in each stack, default 2)."""
    import subprocess
    import sys

    import torch
    from transformers import AutoConfig

    import pitome_hf  # noqa: F401  (registers the PiToMe configs)
    from pitome_hf.commands import load_check

    folder = Path(folder)
    config = AutoConfig.from_pretrained(str(folder))
    entry = entry_for_config_dict(json.loads((folder / "config.json").read_text()))
    auto = entry.autos[0] if entry.autos else "AutoModel"
    limit = full_check_max_bytes() if max_full_bytes is None else max_full_bytes
    files = load_check.weight_files(folder)
    bounded = bool(files) and sum(p.stat().st_size for p in files if p.is_file()) > limit
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(family_of(config).dummy_inputs(config), Path(tmp) / "inputs.pt")
        command = [sys.executable, load_check.__file__, str(folder.resolve()), auto, str(Path(tmp) / "inputs.pt"),
                   "--keep-layers", str(keep_layers or load_check.KEEP_LAYERS)]
        script = textwrap.dedent(f"""
            import sys
            sys.modules["pitome_hf"] = None  # remote code only, as on a machine without pitome_hf
            import json, torch, transformers
            model, info = transformers.{auto}.from_pretrained({str(folder.resolve())!r}, trust_remote_code=True,
                                                                 output_loading_info=True)
            bad = {{k: sorted(map(str, v))[:5] for k, v in info.items()
                    if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}}
            with torch.no_grad():
                out = model.eval()(**torch.load({str(Path(tmp) / "inputs.pt")!r}))
            values = [v for v in out.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
            print(json.dumps({{"class": type(model).__name__, "bad_keys": bad,
                               "finite": all(bool(torch.isfinite(v).all()) for v in values)}}))
        """)
        env = {**os.environ, "HF_HOME": str(Path(tmp) / "hf_home"), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_VERBOSITY": "error"}
        try:
            proc = subprocess.run(command if bounded else [sys.executable, "-c", script], env=env,
                                  capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise VerificationError(f"{folder} did not load and run within {timeout} s; nothing was uploaded.") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise VerificationError(f"{folder} does not load as remote code: {lines[-1] if lines else 'the process failed'}. "
                                "Nothing was uploaded; re-create the folder with `pitome-hf convert`.")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if bounded:
        if result["problems"]:
            raise VerificationError(f"{folder} {result['problems'][0]}; nothing was uploaded.")
        return result
    if result["bad_keys"]:
        raise VerificationError(f"{folder} does not load every weight ({result['bad_keys']}); nothing was uploaded.")
    if not result["finite"]:
        raise VerificationError(f"{folder} loads, but a forward gives non-finite outputs; nothing was uploaded.")
    return result



def hub_owned(path: str) -> bool:
    """Whether a repo file is the Hub's (or the repo's tooling's), never a previous model's: `.gitattributes`, the
    Hub's `.eval_results/` files, and any other hidden path (push uploads no hidden file, so it never deletes one)."""
    return any(part.startswith(".") for part in path.split("/"))


def extra_remote_files(api, repo_id: str, revision: Optional[str], uploads: set, folder: Path, delete: bool) -> list:
    """Files on the repo (at `revision`) that this upload does not replace: a previous model's code, weights or
    processor files. Returned to be deleted in the upload's commit when `delete`; else refused (ValueError listing
    them). The Hub's own files (`hub_owned`: .gitattributes, .eval_results/, hidden paths) never count; README.md is
    replaced by the rendered card."""
    extra = sorted(p for p in set(api.list_repo_files(repo_id, revision=revision)) - uploads if not hub_owned(p))
    if extra and not delete:
        shown = ", ".join(extra[:6]) + (f", ... ({len(extra)} in all)" if len(extra) > 6 else "")
        raise ValueError(f"{repo_id} holds files this folder lacks, left by an earlier upload ({shown}): pass "
                         "--delete-extra-files to delete them in the same commit, or copy those to keep into "
                         f"{folder}.")
    return extra


def _repo_state(api, repo_id: str, revision: Optional[str], token: Optional[str], force: bool) -> tuple[bool, bool]:
    """(repo exists, branch exists); refuses (ValueError) a repo holding a non-PiToMe model unless `force`. The
    commit the checks saw is `api.repo_info(repo_id, revision=...).sha` (see `push`)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        api.repo_info(repo_id, token=token)
    except RepositoryNotFoundError:
        return False, not revision or revision == "main"
    try:
        existing = hf_hub_download(repo_id, "config.json", revision=revision, token=token)
    except EntryNotFoundError:
        return True, True
    except RevisionNotFoundError:
        return True, False
    model_type = json.loads(Path(existing).read_text()).get("model_type")
    if model_type not in pitome_model_types() and not force:
        raise ValueError(
            f"{repo_id} already holds a {model_type!r} model, not a PiToMe one; refusing to overwrite it. "
            "Pass force=True (--force) to replace it."
        )
    return True, True


def upload_files(folder: Path) -> dict:
    """{path in repo: local file} of what a push uploads: the folder's top-level files, but README.md (rendered) and
    hidden files."""
    return {p.name: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "README.md" and not p.name.startswith(".")}


def push(folder, repo_id: str, *, eval_report: Optional[dict] = None, private: bool = False,
         revision: Optional[str] = None, commit_message: Optional[str] = None, force: bool = False,
         base_model: Optional[str] = None, license: Optional[str] = None, token: Optional[str] = None,
         verify: bool = True, drop_results: bool = False, delete_extra_files: bool = False, onnx=None):
    """Upload the folder plus a rendered README.md to `repo_id` in one commit, after checking everything first.

    Before any request that writes: the folder loads as remote code in a clean process with every weight and runs one
    forward (`verify_loads`; verify=False skips it), the evaluation report belongs to this model and is sane
    (`check_report`), the card validates, a repo holding a non-PiToMe model is refused unless `force`, and files on
    the repo that this folder lacks (a previous model's) are refused unless `delete_extra_files`, which deletes them
    in the same commit. Then the repo (and the branch for `revision`) are created if missing and the commit is made; if
    the commit fails, a repo or branch this call created is deleted again. Without a report, the results on the repo's
    card are kept only when the card records this exact model and configuration (else refused; drop_results=True
    replaces them with a note). `onnx`: True to export the folder's model to `model.onnx` (dynamic batch, the
    model's image size) and upload it beside the weights, or the path of a `pitome-hf export` file to upload; either
    way it must load in ONNX Runtime, carry this folder's merge settings and match PyTorch on a dummy input first."""
    from huggingface_hub import HfApi, ModelCard

    from pitome_hf.evaluation.fingerprints import model_fingerprint

    folder = Path(folder)
    if not HUB_ID.match(repo_id):
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repo id: use org/name (letters, digits, '-', '_', '.').")
    if base_model is not None and (not HUB_ID.match(base_model) or Path(base_model).exists()):
        raise ValueError(f"--base-model {base_model!r} must be a Hub model id (org/name), not a local path.")
    config = read_pitome_config(folder)
    if eval_report is not None:
        check_report(eval_report, folder, config)
    if verify:
        verify_loads(folder)
    license = resolve_license(config, license, base_model, token)
    if not license:
        raise ValueError(f"{folder} has no licence on record (its base's model card names none): pass --license ID, "
                         "the base model's licence as a Hub licence id (apache-2.0, mit, ...; 'other' for a custom "
                         "one); nothing was uploaded.")
    fingerprint = model_fingerprint(folder)
    files = upload_files(folder)
    onnx_dir = tempfile.TemporaryDirectory(prefix="pitome_push_onnx_") if onnx else None
    onnx_metadata = None
    if onnx:
        onnx_path, onnx_metadata = checked_onnx(folder, onnx, onnx_dir.name)
        files["model.onnx"] = onnx_path
    api = HfApi(token=token)
    repo_exists, branch_exists = _repo_state(api, repo_id, revision, token, force)
    kept, extra, parent = (None, None), [], None
    if repo_exists and branch_exists:
        parent = api.repo_info(repo_id, revision=revision, token=token).sha  # what the checks below look at
        extra = extra_remote_files(api, repo_id, revision, {*files, "README.md"}, folder, delete_extra_files)
        if eval_report is None and not drop_results:
            kept = kept_results(repo_id, revision, token, fingerprint)
    card = render_card(folder, repo_id, eval_report, base_model, license, kept=kept, fingerprint=fingerprint,
                       onnx_metadata=onnx_metadata)
    round_trip = ModelCard(str(card)).data.to_dict()
    if round_trip.get("model-index") is None and card.data.eval_results:  # (local data: no model-index, by design)
        raise ValueError("the rendered card lost its model-index on a round trip; not uploading.")
    card.validate(repo_type="model")
    message = commit_message or f"Upload PiToMe model ({card.data.pipeline_tag})"
    return _commit(api, repo_id, revision, private, (repo_exists, branch_exists, parent), files, str(card), extra,
                   message)


def checked_onnx(folder: Path, onnx, workdir: str) -> tuple[Path, dict]:
    """(path, metadata) of the model.onnx to upload: `onnx` a file given, or True to export the folder's model into
    `workdir`. Refused (ValueError) unless it loads in ONNX Runtime, records the folder's merge settings and matches
    PyTorch on a dummy input."""
    from pitome_hf.deployment.onnx import check_file, export_onnx, read_metadata, require_onnx
    # pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
    from pitome_hf.modeling.merge_config import MERGE_FIELDS

    require_onnx()
    config = read_pitome_config(folder)
    model = entry_for_config_dict(config).pitome.from_pretrained(folder).eval()
    if onnx is True:
        path = Path(workdir) / "model.onnx"
        export_onnx(model, path, batch_size=1, dynamic_batch=True, check=False)  # check_file below compares
    else:
        path = Path(onnx)
    meta = read_metadata(path, "--onnx")  # a folder, a missing file or one that is no ONNX model: one line naming it
    if "merge_settings" not in meta:
        raise ValueError(f"--onnx {onnx}: the file has no pitome_hf merge settings in its metadata; export it with "
                         "`pitome-hf export` (or give --onnx without a path).")
    recorded = json.loads(meta["merge_settings"])
    ours = {k: getattr(model.config, k, None) for k in MERGE_FIELDS}
    differ = sorted(k for k in ours if json.dumps(recorded.get(k)) != json.dumps(ours[k]))
    if differ:
        raise ValueError(f"--onnx {onnx} was exported with other merge settings than {folder} ("
                         + ", ".join(f"{k}: {recorded.get(k)!r} vs {ours[k]!r}" for k in differ) + "); re-export it.")
    check_file(path, model, what="--onnx")  # its input size, outputs and numbers, read from the graph and run
    return path, meta


def _commit(api, repo_id, revision, private, state, files, card_text, extra, message):
    """Create the repo and branch when missing, then one commit: every file, README.md, and the deletion of `extra`,
    on top of the commit the checks saw (`state[2]`: a push in between makes the Hub refuse it, HTTP 412). On any
    failure, a repo or branch created here is deleted again (a failure to clean up never hides the cause)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    repo_exists, branch_exists, parent = state
    created_repo = created_branch = False
    try:
        if not repo_exists:
            api.create_repo(repo_id, private=private, exist_ok=False)
            created_repo = True
        if not branch_exists:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
            created_branch = True
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card_text.encode()))
        operations += [CommitOperationDelete(path_in_repo=path) for path in extra]
        try:
            return api.create_commit(repo_id, operations, commit_message=message, revision=revision,
                                     parent_commit=parent)
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) != 412:
                raise
            raise RuntimeError(f"{repo_id} changed while this push checked it (another push?): nothing was uploaded; "
                               "run the push again to check the new state.") from None
    except BaseException:
        try:
            if created_repo:
                api.delete_repo(repo_id)
            elif created_branch:
                api.delete_branch(repo_id, branch=revision)
        except Exception:
            pass
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a PiToMe checkpoint folder (from `pitome-hf convert` or save_pretrained)")
    parser.add_argument("repo_id", help="org/name on the Hub")
    parser.add_argument("--eval-json", default=None, help="results.json of `pitome-hf evaluate --model FOLDER` (default: "
                        "none; the card keeps the results already on the Hub when the card records this exact model "
                        "and configuration, and the push is refused when they belong to another)")
    parser.add_argument("--drop-results", action="store_true", help="without --eval-json: replace the card's results "
                        "with a note instead of keeping them")
    parser.add_argument("--private", action="store_true", help="create the repo private (default: public)")
    parser.add_argument("--revision", default=None, help="branch to push to, created if missing (default: main)")
    parser.add_argument("--commit-message", default=None, help="default: 'Upload PiToMe model (<pipeline tag>)'")
    parser.add_argument("--base-model", default=None, help="Hub id of the base model for the card (default: the one "
                        "convert recorded, if any)")
    parser.add_argument("--license", default=None, help="licence for the card, a Hub licence id (default: the base's, "
                        "from its model card; a push with no licence known is refused)")
    parser.add_argument("--force", action="store_true", help="overwrite a repo that holds a non-PiToMe model")
    parser.add_argument("--delete-extra-files", action="store_true", help="delete the repo's files that this folder "
                        "lacks (a previous model's code, weights, processor) in the same commit (default: refuse "
                        "the push and list them)")
    parser.add_argument("--no-verify", action="store_true", help="skip loading the folder in a clean process before "
                        "uploading (not recommended; weights above 1 GiB, or PITOME_HF_FULL_CHECK_MAX_BYTES, get a "
                        "bounded check whose memory does not grow with the model)")
    parser.add_argument("--onnx", nargs="?", const=True, default=None, metavar="MODEL_ONNX", help="also upload "
                        "model.onnx beside the weights: the given `pitome-hf export` file, or without a path the folder's "
                        "model exported here (dynamic batch); it must load in ONNX Runtime, carry the folder's merge "
                        "settings and match PyTorch on a dummy input (pip install \"pitome_hf[onnx]\")")
    args = parser.parse_args(argv)
    report = read_json(args.eval_json, "--eval-json") if args.eval_json else None
    info = push(args.folder, args.repo_id, eval_report=report, private=args.private, revision=args.revision,
                commit_message=args.commit_message, force=args.force, base_model=args.base_model,
                license=args.license, verify=not args.no_verify, drop_results=args.drop_results,
                delete_extra_files=args.delete_extra_files, onnx=args.onnx)
    print(f"pushed {args.folder} to {args.repo_id}: {info.commit_url if hasattr(info, 'commit_url') else info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
