"""What `create_data.py --fix-timing / --max-cue-wer / --check` do to a recording's cues before
they are cut into windows, from the data check's findings (datacheck.py): cue times moved onto
the speech where the file's timing estimate is sure, and cues whose text disagrees with the
audio marked to be left out (windows drop their text and silence their audio, see windows.py,
so no window trains text without its audio or audio without its text)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .windows import LEFT_OUT


@dataclass
class RepairedCue:
    """A cue as `windows.split_into_windows` takes it; `skip_reason` LEFT_OUT: its text dropped
    and its audio silenced."""

    start: float
    end: float
    text: str
    skip_reason: str | None = None


def read_findings(path: str | Path) -> dict[str, dict]:
    """The per-file findings of a check-data JSON file (see `index_findings`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return index_findings(data["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a check-data findings file ({exc})") from None


def index_findings(files: list) -> dict[str, dict]:
    """Per-file findings (the JSON's "files") by audio path (absolute) and by file name."""
    found: dict[str, dict] = {}
    for entry in files:
        if isinstance(entry, dict) and entry.get("audio"):
            found[str(Path(entry["audio"]).absolute())] = entry
            found.setdefault(Path(entry["audio"]).name, entry)
    return found


def findings_for(findings: dict[str, dict], audio_path: Path) -> dict | None:
    return findings.get(str(audio_path.absolute())) or findings.get(audio_path.name)


def repair(cues, finding: dict | None, *, fix_timing: bool, max_cue_wer: float | None = None,
           max_cue_cer: float | None = None) -> tuple[list[RepairedCue], dict | None]:
    """(the cues to cut windows from, what was changed or None). Timing is corrected only where
    the check was sure and found the cues off; a cue is left out when its WER is above
    `max_cue_wer` or its CER above `max_cue_cer` (cues over silence score 100%: their words
    are all missing)."""
    out = [RepairedCue(c.start, c.end, c.text) for c in cues]
    if finding is None:
        return out, None
    changes: dict = {}
    timing = finding.get("timing") or {}
    if fix_timing and timing.get("applied_by_fix_timing"):
        offset, rate = float(timing["offset"]), float(timing["rate"])
        for c in out:
            c.start, c.end = (c.start - offset) / rate, (c.end - offset) / rate
        changes["timing"] = {"offset": round(offset, 3), "rate": round(rate, 5)}
    limits = {"wer": max_cue_wer, "cer": max_cue_cer}
    if any(v is not None for v in limits.values()):
        by_index = {c.get("index"): c for c in finding.get("cues", []) if isinstance(c, dict)}
        left_out = []
        for k, c in enumerate(out, start=1):
            found = by_index.get(k) or {}
            if any(limit is not None and found.get(rate) is not None and found[rate] > limit
                   for rate, limit in limits.items()):
                c.skip_reason = LEFT_OUT
                left_out.append(k)
        if left_out:
            changes["left_out_cues"] = left_out
            changes.update({f"max_cue_{rate}": limit for rate, limit in limits.items() if limit is not None})
    return out, changes or None
