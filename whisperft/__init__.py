"""whisperft: fine-tune OpenAI Whisper on your own audio and time-aligned transcripts.

The library's entry points, one per stage (each loaded on first use, so `import whisperft`
starts without importing torch or transformers):

    from whisperft import load_model, transcribe_file, TrainConfig, fine_tune

Stage functions named like their module (`train.train`, `prepare.prepare`) are exported
under other names: a package attribute `train` would hide the module `whisperft.train`.
For the same reason the `export` function's module is `exporting`, not `export`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, name there)
_ENTRY_POINTS = {
    "load_model": "models", "WhisperBundle": "models", "ExportOptions": "exporting", "export": "exporting",
    "PrepareOptions": "prepare", "prepare_data": ("prepare", "prepare"),
    "TrainConfig": "train", "fine_tune": ("train", "train"),
    "TranscribeOptions": "transcription", "transcribe_file": "transcribe", "transcribe_audio": "transcribe",
    "transcribe_dir": "transcribe", "Segment": "transcription", "Transcript": "transcription",
    "EvaluateOptions": "metrics", "evaluate": "metrics", "score": "metrics",
    "CheckOptions": "datacheck", "check_data": "datacheck", "check_recording": "datacheck",
    "estimate_timing": "sync",
    "InterpolateOptions": "interpolation", "interpolate": "interpolation",
    "interpolate_models": "interpolation", "recommend_alpha": "interpolation",
    "make_general_set": "general_set",
    "UserError": "errors",
}
__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str):
    where = _ENTRY_POINTS.get(name)
    if where is None:
        raise AttributeError(f"module 'whisperft' has no attribute {name!r}")
    module, attribute = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
