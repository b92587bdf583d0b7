"""Fingerprints read each file once (issue #35): content hashes cached against the file's identity, the Hugging Face
cache's blob names used as they are, every change noticed, and the same values as before the cache."""

import hashlib
import json
import os
import time

import pytest

from pitome_hf.evaluation import fingerprints
from pitome_hf.evaluation.fingerprints import cache_path, files_digest, model_fingerprint


def reference(files) -> str:
    """The fingerprint as it was computed before the cache: every file read, every time."""
    digest = hashlib.sha256()
    for name, path in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PITOME_HF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / fingerprints.CACHE_FILE


@pytest.fixture
def reads(monkeypatch):
    """The files whose content is read (the cache's misses)."""
    seen = []
    original = fingerprints._content_sha256

    def spy(path):
        seen.append(path.name)
        return original(path)

    monkeypatch.setattr(fingerprints, "_content_sha256", spy)
    return seen


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "pitome_vit"}')
    (path / "model.safetensors").write_bytes(os.urandom(4096))
    (path / "modeling_pitome_vit.py").write_text("x = 1\n")
    (path / "README.md").write_text("not part of the fingerprint")
    return path


def model_files(path):
    return [(p.name, p) for p in path.iterdir() if p.name != "README.md"]


def test_the_values_are_those_of_reading_every_file(folder, cache):
    assert model_fingerprint(folder) == reference(model_files(folder)) == model_fingerprint(folder)
    weights = [(p.name, p) for p in folder.glob("*.safetensors")]
    assert model_fingerprint(folder, weights_only=True) == reference(weights)
    assert files_digest([("", folder / "config.json")]) == reference([("", folder / "config.json")])


def test_an_unchanged_folder_is_not_read_again(folder, cache, reads, monkeypatch):
    monkeypatch.setattr(fingerprints, "RACY_NS", 0)  # the files were written just now
    first = model_fingerprint(folder)
    assert sorted(reads) == ["config.json", "model.safetensors", "modeling_pitome_vit.py"]
    reads.clear()
    assert model_fingerprint(folder) == first and reads == []
    entries = json.loads(cache.read_text())["files"]
    assert str((folder / "model.safetensors").resolve()) in entries


def test_a_same_size_change_is_noticed_even_with_its_mtime_set_back(folder, cache, reads, monkeypatch):
    monkeypatch.setattr(fingerprints, "RACY_NS", 0)
    weights = folder / "model.safetensors"
    first = model_fingerprint(folder)
    before = os.stat(weights)
    time.sleep(0.05)  # past the clock tick the first write's ctime fell in
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(weights)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns  # what gives the change away
    reads.clear()
    changed = model_fingerprint(folder)
    assert changed != first and changed == reference(model_files(folder)) and reads == ["model.safetensors"]
    replacement = folder / "new.tmp"  # a file renamed over it: same size, content and times, another inode
    replacement.write_bytes(bytes(data[:-1]) + b"\0")
    os.utime(replacement, ns=(after.st_atime_ns, after.st_mtime_ns))
    os.replace(replacement, weights)
    assert model_fingerprint(folder) == reference(model_files(folder)) != changed


def test_a_file_changed_just_now_is_never_cached(folder, cache, reads):
    """Within RACY_NS of a write, a second write may leave the same ctime: such a file is read every time."""
    model_fingerprint(folder)
    assert not cache.exists() or str((folder / "model.safetensors").resolve()) not in json.loads(
        cache.read_text())["files"]
    reads.clear()
    model_fingerprint(folder)
    assert "model.safetensors" in reads


def test_a_corrupt_or_unwritable_cache_is_ignored(folder, cache, monkeypatch, tmp_path):
    monkeypatch.setattr(fingerprints, "RACY_NS", 0)
    cache.parent.mkdir(parents=True)
    cache.write_text('{"version": 1, "files": {"x": 3}')  # cut short
    assert model_fingerprint(folder) == reference(model_files(folder))
    assert len(json.loads(cache.read_text())["files"]) == 3  # rewritten whole
    cache.write_text(json.dumps({"version": 1, "files": {str((folder / "config.json").resolve()): "junk"}}))
    assert model_fingerprint(folder) == reference(model_files(folder))
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("PITOME_HF_CACHE", str(blocked))  # its folder cannot be created
    assert cache_path() == blocked / fingerprints.CACHE_FILE
    assert model_fingerprint(folder) == reference(model_files(folder))


def test_the_default_cache_is_under_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("PITOME_HF_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_path() == tmp_path / "pitome_hf" / "file_hashes.json"


def test_files_in_the_hugging_face_cache_are_known_by_their_blob_name(tmp_path, cache, reads):
    """snapshots/<rev>/NAME links to blobs/<sha256> (LFS) or blobs/<git sha1> (small files): the first is not read."""
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    weights, config = os.urandom(2048), b'{"model_type": "pitome_vit"}'
    sha256 = hashlib.sha256(weights).hexdigest()
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    (repo / "blobs" / sha256).write_bytes(weights)
    (repo / "blobs" / git_sha1).write_bytes(config)
    (snapshot / "model.safetensors").symlink_to(f"../../blobs/{sha256}")
    (snapshot / "config.json").symlink_to(f"../../blobs/{git_sha1}")
    assert fingerprints.hub_blob_sha256(snapshot / "model.safetensors") == bytes.fromhex(sha256)
    assert fingerprints.hub_blob_sha256(snapshot / "config.json") is None
    assert model_fingerprint(snapshot) == reference(model_files(snapshot))
    assert reads == [git_sha1]  # the weights were not read
