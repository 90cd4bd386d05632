"""`create_data.py --hf-dataset`: a dataset built with `datasets` (espeak-ng speech) gives the
manifest that the same audio as files with subtitles (or a clip list) gives: same windows, same
text and prompts, same audio and features; only the paths differ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SENTENCES, speak
from whisperft.audio import SAMPLE_RATE, load_audio, save_wav
from whisperft.cli import main as cli_main
from whisperft.errors import UserError
from whisperft.manifest import read_manifest
from whisperft.prepare import HF_SOURCE_FILE, PrepareOptions, prepare

datasets = pytest.importorskip("datasets")

EXTRA_SENTENCES = ["Numbers like forty two are spoken one word at a time.",
                   "A short line."]
GAP = 1.2  # seconds of silence between two sentences of a recording
# Recording -> sentences it speaks, in order: the first lasts over 30 s (three windows, prompts,
# a sentence crossing a window end), the second is short.
RECORDINGS = {"a_talk": [0, 1, 2, 3, 4, 5, 1, 0, 2, 3], "b_chat": [4, 5]}  # folder order


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    # load_dataset converts files into its cache: this test's, not ~/.cache
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> list[tuple[np.ndarray, str]]:
    root = tmp_path_factory.mktemp("sentences")
    texts = SENTENCES + EXTRA_SENTENCES
    return [(load_audio(speak(text, root / f"s{i}.wav")), text) for i, text in enumerate(texts)]


def srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, sentences):
    """A folder of WAVs with .srt files, and the same as dataset rows (audio bytes + segments)."""
    folder = tmp_path_factory.mktemp("recordings")
    rows = []
    for name, order in RECORDINGS.items():
        pieces, segments, t = [], [], 0.0
        for i in order:
            audio, text = sentences[i]
            if pieces:
                pieces.append(np.zeros(int(GAP * SAMPLE_RATE), np.float32))
                t += GAP
            segments.append({"start": round(t, 3), "end": round(t + len(audio) / SAMPLE_RATE, 3), "text": text})
            pieces.append(audio)
            t += len(audio) / SAMPLE_RATE
        save_wav(folder / f"{name}.wav", np.concatenate(pieces))
        (folder / f"{name}.srt").write_text("".join(
            f"{n}\n{srt_time(s['start'])} --> {srt_time(s['end'])}\n{s['text']}\n\n"
            for n, s in enumerate(segments, start=1)), encoding="utf-8")
        rows.append({"audio": {"bytes": (folder / f"{name}.wav").read_bytes(), "path": f"{name}.wav"},
                     "segments": segments})
    return folder, rows


@pytest.fixture(scope="module")
def clips(tmp_path_factory, sentences):
    """A clip folder with an audiofolder metadata.csv, and the same as dataset rows (audio + sentence)."""
    folder = tmp_path_factory.mktemp("clips")
    rows, lines = [], ["file_name,transcription"]
    for i, (audio, text) in enumerate(sentences):
        save_wav(folder / f"c{i}.wav", audio)
        lines.append(f'c{i}.wav,"{text}"')
        rows.append({"audio": {"bytes": (folder / f"c{i}.wav").read_bytes(), "path": f"c{i}.wav"}, "sentence": text})
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, rows


def as_dataset(rows: list[dict], audio_column: str = "audio"):
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return datasets.Dataset.from_dict(columns).cast_column(audio_column, datasets.Audio())


def save_as(dataset, kind: str, root: Path) -> tuple[str, list[str]]:
    """The dataset written as `kind`; its --hf-dataset argument and extra flags."""
    if kind == "saved":
        dataset.save_to_disk(str(root / "saved"))
        return str(root / "saved"), []
    if kind == "saved-dict":  # a DatasetDict: the split is chosen
        datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(root / "saved_dict"))
        return str(root / "saved_dict"), ["--hf-split", "train"]
    dataset.to_parquet(str(root / "data.parquet"))
    return str(root / "data.parquet"), ["--streaming"] if kind == "parquet-streaming" else []


def run_prepare(output: Path, *flags: str) -> int:
    return cli_main(["prepare", "--output", str(output), *flags])


def examples(manifest: Path) -> list[tuple]:
    """What a training example is, paths aside; its audio and features, loaded."""
    out = []
    for r in read_manifest(manifest):
        audio = load_audio(r.audio_path)
        if r.duration is not None:  # a clip list's clip is its own file: the whole of it
            audio = audio[int(round(r.offset * SAMPLE_RATE)):][:int(round(r.duration * SAMPLE_RATE))]
        out.append(((r.text, r.prompt, r.language, r.start, r.duration), audio, np.load(r.features_path)))
    return out


def assert_same_examples(got: Path, want: Path) -> None:
    got, want = examples(got), examples(want)
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, audio, features), (_, want_audio, want_features) in zip(got, want):
        # a clip list's clip is its own file; a row's is written again as 16-bit WAV: one step apart
        np.testing.assert_allclose(audio, want_audio, rtol=0, atol=1.5 / 32768)
        np.testing.assert_array_equal(features, want_features)


@pytest.mark.parametrize("kind", ["saved", "saved-dict", "parquet", "parquet-streaming"])
def test_segments_give_the_windows_of_the_subtitled_recordings(tmp_path, recordings, kind):
    folder, rows = recordings
    assert run_prepare(tmp_path / "files.json", "--audio-dir", str(folder)) == 0
    source, flags = save_as(as_dataset(rows), kind, tmp_path)
    assert run_prepare(tmp_path / "hf.json", "--hf-dataset", source, *flags) == 0

    assert_same_examples(tmp_path / "hf.json", tmp_path / "files.json")
    records = read_manifest(tmp_path / "hf.json")
    assert len(records) >= 3 and all(r.text.startswith("<|") for r in records)  # timestamps
    assert any(r.prompt for r in records) and any(r.start > 0 for r in records)  # talk: several windows
    # every record names where it came from: the dataset, its split, the columns read
    assert {Path(r.source).name for r in records} == {HF_SOURCE_FILE}
    described = json.loads(Path(records[0].source).read_text())
    assert described["dataset"] == str(Path(source).absolute())
    assert described["split"] == ("train" if kind != "saved" else None)
    assert described["segments_column"] == "segments" and described["streaming"] == (kind == "parquet-streaming")


def test_pipeline_chunks_with_an_open_end_give_the_same_windows(tmp_path, recordings):
    """transformers' ASR pipeline writes {"timestamp": (start, end), "text"}, the last end
    sometimes None: it ends with the audio (here the recording ends with its last sentence)."""
    folder, rows = recordings
    chunk_rows = [{"audio": row["audio"],
                   "chunks": [{"timestamp": [s["start"], s["end"]], "text": s["text"]} for s in row["segments"]]}
                  for row in rows]
    for row in chunk_rows:
        row["chunks"][-1]["timestamp"][1] = None
    source, flags = save_as(as_dataset(chunk_rows), "parquet", tmp_path)
    assert run_prepare(tmp_path / "files.json", "--audio-dir", str(folder)) == 0
    assert run_prepare(tmp_path / "hf.json", "--hf-dataset", source, *flags) == 0
    assert_same_examples(tmp_path / "hf.json", tmp_path / "files.json")


@pytest.mark.parametrize("kind", ["saved", "parquet-streaming"])
@pytest.mark.parametrize("pack", [False, True])
def test_text_rows_give_the_clips_of_the_clip_list(tmp_path, clips, kind, pack):
    folder, rows = clips
    packing = ["--pack"] if pack else []
    assert run_prepare(tmp_path / "files.json", "--audio-dir", str(folder), *packing) == 0
    source, flags = save_as(as_dataset(rows), kind, tmp_path)
    assert run_prepare(tmp_path / "hf.json", "--hf-dataset", source, *flags, *packing) == 0

    assert_same_examples(tmp_path / "hf.json", tmp_path / "files.json")
    records = read_manifest(tmp_path / "hf.json")
    if pack:  # several clips a window, timestamped from their boundaries
        assert len(records) < len(rows) and all(r.text.startswith("<|0.00|>") for r in records)
        listing = json.loads(Path(records[0].features_path.replace(".mel80.npy", ".json")).read_text())
        assert listing["hf_dataset"]["text_column"] == "sentence" and listing["clips"][0]["row"] == 0
    else:
        assert [r.text for r in records] == [" " + text for text in SENTENCES + EXTRA_SENTENCES]


def test_unguessable_columns_are_named_in_one_line_before_any_work(tmp_path, clips):
    _, rows = clips
    renamed = [{"recording": row["audio"], "words": row["sentence"]} for row in rows]
    source = str(tmp_path / "data.parquet")
    datasets.Dataset.from_dict({"recording": [r["recording"] for r in renamed],
                                "words": [r["words"] for r in renamed]}).to_parquet(source)
    output = tmp_path / "out" / "hf.json"
    opts = PrepareOptions(hf_dataset=source, output=str(output))
    with pytest.raises(UserError) as caught:
        prepare(opts)
    message = str(caught.value)
    assert "\n" not in message and "--audio-column" in message and "columns: recording, words" in message
    assert not (tmp_path / "out").exists()

    opts.audio_column = "recording"  # the audio named, the text still unguessable
    with pytest.raises(UserError, match=r"--text-column.*columns: recording, words"):
        prepare(opts)
    with pytest.raises(UserError, match=r"no column 'speech' \(--audio-column\); columns: recording, words"):
        prepare(PrepareOptions(hf_dataset=source, output=str(output), audio_column="speech"))

    opts.text_column = "words"  # both named: it runs (a plain {bytes, path} column decodes too)
    assert prepare(opts) == 0
    assert [r.text for r in read_manifest(output)] == [" " + text for text in SENTENCES + EXTRA_SENTENCES]


def test_a_row_that_cannot_be_decoded_is_named_and_the_run_goes_on(tmp_path, clips, capsys):
    _, rows = clips
    broken = [*rows[:2], {"audio": {"bytes": b"not audio at all", "path": "broken.wav"}, "sentence": "x"}]
    source, _ = save_as(as_dataset(broken), "parquet", tmp_path)
    assert run_prepare(tmp_path / "hf.json", "--hf-dataset", source) == 1
    assert "row 2 (broken.wav): cannot decode audio" in capsys.readouterr().err
    assert len(read_manifest(tmp_path / "hf.json")) == 2


@pytest.mark.parametrize("flags, message", [
    (["--hf-dataset", "no-such-user/no-such-dataset"], "--hf-dataset no-such-user/no-such-dataset: cannot load it"),
    (["--hf-dataset", "x", "--no-dump"], "drop --no-dump"),
    (["--hf-dataset", "x", "--data-file", "list.tsv"], "drop --audio-dir"),
    (["--audio-dir", "x", "--text-column", "text"], "--text-column goes with --hf-dataset"),
])
def test_option_errors(tmp_path, flags, message, capsys):
    assert run_prepare(tmp_path / "hf.json", *flags) != 0
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("streaming", [False, True])
def test_a_local_audiofolder(tmp_path, clips, streaming, capsys):
    """datasets reads an audiofolder's files only through torchcodec: with it the manifest is the
    clip list's; without it, one line says what to install or to use --audio-dir instead."""
    folder, _ = clips
    assert run_prepare(tmp_path / "files.json", "--audio-dir", str(folder)) == 0
    flags = ["--hf-dataset", str(folder)] + (["--streaming"] if streaming else [])
    if not datasets.config.TORCHCODEC_AVAILABLE:
        assert run_prepare(tmp_path / "hf.json", *flags) != 0
        assert "only through torchcodec" in capsys.readouterr().err
        return
    assert run_prepare(tmp_path / "hf.json", *flags) == 0
    assert_same_examples(tmp_path / "hf.json", tmp_path / "files.json")


def test_a_streamed_parquet_file_gives_the_rows_that_datasets_gives(tmp_path, recordings):
    from whisperft.hf_data import ParquetStream, open_hf_dataset

    _, rows = recordings
    n = ParquetStream.BATCH_ROWS * 2 + 3  # batches cut inside the file
    many = [{**rows[i % len(rows)], "language": ["en", "de", ""][i % 3], "unused": i} for i in range(n)]
    source, _ = save_as(as_dataset(many), "parquet", tmp_path)

    def seen(streaming: bool) -> list[tuple]:
        hf = open_hf_dataset(source, streaming=streaming)
        assert hf.total == n
        return [(r.index, r.stem, r.encoded, r.segments, r.language) for r in hf.rows()]

    streamed = seen(True)
    assert isinstance(open_hf_dataset(source, streaming=True).dataset, ParquetStream)
    assert [r[3] for r in streamed] == [row["segments"] for row in many]
    assert streamed == seen(False)
