"""The JSONL manifest: relative paths, jumon/whisper-finetuning's manifests, clear errors, atomic writes."""

import json
import shutil

import pytest

from whisperft.errors import UserError
from whisperft.manifest import Record, read_manifest, write_manifest


def test_paths_are_stored_relative_and_resolved_on_read(tmp_path):
    data = tmp_path / "data"
    manifest = data / "train.json"
    records = [
        Record(audio_path=str(data / "dump" / "a" / "0.wav"), text="<|0.00|> Hi<|0.80|>", prompt="",
               start=0.0, duration=30.0, source=str(tmp_path / "audio" / "a.wav"),
               features_path=str(data / "dump" / "a" / "0.mel80.npy"), n_mels=80),
        Record(audio_path=str(tmp_path / "audio" / "b.wav"), text="", language="es", start=12.3456, duration=None),
    ]
    write_manifest(manifest, records)
    lines = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    # Inside the manifest's folder: relative; outside it: absolute (a relative path may not climb out).
    assert lines[0] == {"audio_path": "dump/a/0.wav", "text": "<|0.00|> Hi<|0.80|>", "language": "en",
                        "prompt": "", "start": 0.0, "duration": 30.0, "source": str(tmp_path / "audio" / "a.wav"),
                        "features_path": "dump/a/0.mel80.npy", "n_mels": 80}
    assert lines[1] == {"audio_path": str(tmp_path / "audio" / "b.wav"), "text": "", "language": "es",
                        "prompt": "", "start": 12.346}

    back = read_manifest(manifest)
    assert back[0] == records[0]
    assert back[1].audio_path == str(tmp_path / "audio" / "b.wav") and back[1].start == 12.346
    assert (back[0].offset, back[1].offset) == (0.0, 12.346)  # a dumped window starts at 0 in its file

    # The whole tree moves: the manifest still finds its files.
    shutil.move(str(tmp_path / "data"), str(tmp_path / "moved"))
    assert read_manifest(tmp_path / "moved" / "train.json")[0].audio_path == str(tmp_path / "moved" / "dump/a/0.wav")


def test_reads_the_origin_projects_manifests(tmp_path):
    manifest = tmp_path / "jumon.json"
    manifest.write_text(
        '{"audio_path": "/abs/dump/x/0.wav", "text": "<|0.00|> hi<|1.00|>", "language": "ja", "prompt": ""}\n'
        '{"audio": "clip.wav", "text": "older key name", "language": "en", "prompt": ""}\n', encoding="utf-8")
    a, b = read_manifest(manifest)
    assert a == Record(audio_path="/abs/dump/x/0.wav", text="<|0.00|> hi<|1.00|>", language="ja")
    assert b.audio_path == str(tmp_path / "clip.wav") and b.duration is None and b.offset == 0.0


@pytest.mark.parametrize("line, message", [
    ("{not json", r"line 2: not valid JSON"),
    ('{"text": "no audio"}', r"line 2: missing 'audio_path'"),
    ('{"audio_path": "a.wav"}', r"line 2: missing 'text'"),
    ('{"audio_path": 3, "text": ""}', r"line 2: 'audio_path' must be a string"),
    ('{"audio_path": "a.wav", "text": "", "start": -1}', r"line 2: 'start' must be a number of seconds >= 0"),
    ('{"audio_path": "a.wav", "text": "", "duration": "long"}', r"line 2: 'duration' must be a number"),
    ('{"audio_path": "a.wav", "text": "", "n_mels": 80.5}', r"line 2: 'n_mels' must be a positive integer"),
    ('["a.wav", "text"]', r"line 2: expected a JSON object"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    manifest = tmp_path / "m.json"
    manifest.write_text('{"audio_path": "a.wav", "text": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=message) as err:
        read_manifest(manifest)
    assert str(err.value).startswith(f"{manifest}: line 2: ") and "\n" not in str(err.value)


def test_blank_lines_bom_and_missing_file(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_bytes(b'\xef\xbb\xbf{"audio_path": "a.wav", "text": "x"}\n\n   \n')
    assert len(read_manifest(manifest)) == 1
    with pytest.raises(UserError, match="no such manifest"):
        read_manifest(tmp_path / "missing.json")


def test_write_is_atomic(tmp_path, monkeypatch):
    manifest = tmp_path / "m.json"
    write_manifest(manifest, [Record(audio_path=str(tmp_path / "a.wav"), text="old")])

    class Boom(Exception):
        pass

    def fail(*args, **kwargs):
        raise Boom

    monkeypatch.setattr("whisperft.fileio.os.replace", fail)
    with pytest.raises(Boom):
        write_manifest(manifest, [Record(audio_path=str(tmp_path / "a.wav"), text="new")])
    assert read_manifest(manifest)[0].text == "old"  # the previous manifest is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # and no temp file is left
