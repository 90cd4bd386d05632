"""Which subtitle file belongs to which recording: matched by name in two folders."""

from __future__ import annotations

from pathlib import Path

from .audio import AUDIO_EXTENSIONS
from .subtitles import SUBTITLE_SUFFIXES


def pair_files(audio_dir: Path, transcript_dir: Path) -> tuple[list[tuple[Path, Path]], list[str], list[str]]:
    """(recording, transcript) pairs matched by name, problems (files left out) and notes."""
    audio_files: dict[str, list[Path]] = {}
    for p in sorted(audio_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS:
            # case-folded: A.wav and a.mp3 would share one dump folder on Windows and macOS
            audio_files.setdefault(p.stem.casefold(), []).append(p)
    transcripts: dict[str, list[Path]] = {}
    for p in sorted(transcript_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in SUBTITLE_SUFFIXES:
            transcripts.setdefault(p.stem, []).append(p)

    pairs, problems, notes, used = [], [], [], set()
    for candidates in audio_files.values():
        audio, *others = candidates
        stem = audio.stem
        for other in others:
            problems.append(f"{other}: {audio.name} has the same name (case aside); one transcript "
                            "cannot serve both")
        found = transcripts.get(stem)
        if not found:  # yt-dlp style "talk.en.srt" for "talk.wav"
            tagged = [s for s in transcripts if s.rsplit(".", 1)[0] == stem and s not in audio_files]
            found = transcripts[tagged[0]] if len(tagged) == 1 else None
        if not found:
            problems.append(f"{audio}: no transcript ({stem}.srt or {stem}.vtt in {transcript_dir})")
            continue
        found = sorted(found, key=lambda p: SUBTITLE_SUFFIXES.index(p.suffix.lower()))
        if len(found) > 1:
            notes.append(f"{found[0]} and {found[1].name} both exist: using {found[0].name}")
        pairs.append((audio, found[0]))
        used.add(found[0].stem)
    for stem, paths in transcripts.items():
        if stem not in used:
            problems.append(f"{paths[0]}: no audio file named {stem}.* in {audio_dir}")
    return pairs, problems, notes
