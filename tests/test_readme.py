"""Every command block of README.md runs as written.

The ```bash blocks run in groups: the blocks of a group hand files to each other, so they run in
README order, each in its own `bash -e`, in one scratch folder that plays the repository root
(the four scripts and demo/ linked into it; its `.venv/bin/activate` activates the Python
running these tests, in CI the `.venv` of `make test`). The walkthrough's first blocks (the
generated data, train.json and dev.json: PREPARE) run once per test run and every group's folder
gets what they made; a group that only needs a fine-tuned model to exist (the exports,
interpolation) gets the run's shared fine-tune of tiny.en as ./output. Blocks that train still
train, on the steps they print. Not run here: the two set-up blocks (the quick start,
`make demo` / `make test`, is what CI itself runs; the install block is pip).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_tool

SETUP_BLOCK_MARKERS = ("make demo", "pip install")
LINKED = ("create_data.py", "run_finetuning.py", "transcribe.py", "calculate_metric.py", "demo")
BLOCK_TIMEOUT_S = 1200

# Each block is found by a string only it holds. PREPARE makes what most groups start from.
PREPARE = ("python demo/make_data.py ./data\n", "--output train.json")
PREPARED = ("data", "dump", "train.json", "dev.json")
# group -> (its blocks, in README order; what they say they make)
GROUPS = {
    "data-check": (("make_faulty_data.py", "--check-report data_check.json"),
                   ("data_check.json", "data_check.html", "faulty.json")),
    "walkthrough": (("--save-dir ./output\n", "--save-dir ./transcripts", "calculate_metric.py"),
                    ("output/best_model.pt", "output/last_model.pt", "output/loss_curve.png")),
    "use-cases": (("--save-dir ./medical_model",),
                  ("medical_model/best_model.pt", "multilingual_model/best_model.pt",
                   "lowmem_model/step2.pt", "lowmem_model/step4.pt")),
    "several-gpus": (("torchrun",), ("output_ddp/best_model.pt",)),
    "export": (("whisperft export",), ("model-ct2/model.bin", "model-hf/config.json", "model.pt", "ggml-model.bin")),
    "interpolation": (("whisperft interpolate",), ("wise.pt", "sweep/sweep.json", "sweep/report.html")),
    "preserve": (("--preserve-weight",), ("guarded_model/best_model.pt",)),
    "short-clips": (("make_short_clips.py",), ("acft/best_model.pt", "short_out/train000_us-m.srt")),
}
NEEDS_A_FINE_TUNE = ("export", "interpolation")  # their blocks read ./output/best_model.pt, nothing more


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def block_holding(needle: str) -> str:
    (block,) = [b for b in readme_blocks() if needle in b]
    return block


def test_readme_blocks_found():
    """Every block is a set-up block, PREPARE's or one group's: a new block cannot go untested."""
    blocks = readme_blocks()
    setup = [b for b in blocks if any(m in b for m in SETUP_BLOCK_MARKERS)]
    assert len(setup) == 2 and len(blocks) >= 9
    owners = {b: [n for n in PREPARE if n in b] + [g for g, (needles, _) in GROUPS.items()
                                                  for n in needles if n in b] for b in blocks if b not in setup}
    assert all(len(o) == 1 for o in owners.values()), {b[:60]: o for b, o in owners.items() if len(o) != 1}


def scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".venv" / "bin").mkdir(parents=True)
    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    (root / ".venv" / "bin" / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    return root


def run_block(root: Path, block: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", ". .venv/bin/activate\n" + block],
                         cwd=root, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert run.returncode == 0, f"README block failed (exit {run.returncode}):\n{block}\n{run.stderr[-3000:]}"
    return run.stdout


@pytest.fixture(scope="session")
def readme_prepared(tmp_path_factory) -> Path:
    """A scratch root where the README's data-generation and create_data.py blocks ran."""
    require_tool("espeak-ng")
    root = scratch_root(tmp_path_factory.mktemp("readme-prepared"))
    for needle in PREPARE:
        run_block(root, block_holding(needle))
    for name in PREPARED:
        assert (root / name).exists(), name
    return root


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS)
def test_readme_commands_run_as_written(group, readme_prepared, request, tmp_path):
    root = scratch_root(tmp_path)
    for name in ("data", "dump"):  # read only; a manifest's relative paths stay inside root
        (root / name).symlink_to(readme_prepared / name)
    for name in ("train.json", "dev.json"):
        shutil.copy(readme_prepared / name, root / name)
    if group in NEEDS_A_FINE_TUNE:
        run = request.getfixturevalue("trained_tiny_en")
        shutil.copytree(run.save_dir, root / "output", ignore=shutil.ignore_patterns("last_model.pt"))
    needles, makes = GROUPS[group]
    outputs = [run_block(root, block_holding(needle)) for needle in needles]

    for path in makes:
        assert (root / path).is_file(), path
    if group == "walkthrough":
        assert sorted(p.stem for p in (root / "transcripts").glob("*.srt")) == \
            sorted(p.stem for p in (root / "data" / "test_audio").glob("*.wav"))
        # the walkthrough's fine-tune works: the original tiny.en scores ~43% on these recordings
        report = outputs[-1]
        wer = float(re.search(r"^Weighted Average WER: ([\d.]+)%", report, re.M).group(1))
        assert wer < 15.0, report
