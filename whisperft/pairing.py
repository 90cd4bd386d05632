"""Which subtitle file belongs to which recording: matched by name in two folders."""

from __future__ import annotations

from pathlib import Path

from .audio import AUDIO_EXTENSIONS
from .errors import UserError
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


def folder_pairs(audio_dir: str | Path, transcript_dir: str | Path | None = None
                 ) -> tuple[list[tuple[Path, Path]], list[str], list[str]]:
    """`pair_files` for the --audio-dir / --transcript-dir flags (transcripts default to the
    audio folder): a missing folder is a UserError naming it."""
    audio_root = Path(audio_dir)
    transcript_root = Path(transcript_dir or audio_dir)
    for folder, flag in ((audio_root, "--audio-dir"), (transcript_root, "--transcript-dir")):
        if not folder.is_dir():
            raise UserError(f"{flag} {folder}: no such folder")
    return pair_files(audio_root, transcript_root)


def no_pairs(audio_dir: str | Path, transcript_dir: str | Path | None = None) -> UserError:
    """The error for folders that hold no recording with its transcript."""
    return UserError(f"{Path(audio_dir)}: no audio file with a matching .srt/.vtt in "
                     f"{Path(transcript_dir or audio_dir)}")
