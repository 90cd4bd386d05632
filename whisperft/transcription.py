"""What transcribing takes and gives, shared by the folder driver (transcribe.py) and both
backends (decoding.py, ct2_backend.py): `TranscribeOptions`, the `Segment`/`Transcript` results,
openai-whisper's decoding defaults, the language check and the signal that a run is being left.
No torch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .errors import UserError
from .options import opt
from .subtitles import TRANSCRIPT_SUFFIXES

# openai-whisper's (and faster-whisper's) defaults for the safeguards
TEMPERATURE_INCREMENT = 0.2  # fallback temperatures 0.0, 0.2, ... 1.0
MAX_TEMPERATURE = 1.0
COMPRESSION_RATIO_THRESHOLD = 2.4  # gzip ratio of the text above which a decode is a loop
LOGPROB_THRESHOLD = -1.0  # mean log-probability per token below which a decode is unsure
NO_SPEECH_THRESHOLD = 0.6  # <|nospeech|> probability above which an unsure window is silence
PROMPT_RESET_TEMPERATURE = 0.5  # a decode hotter than this no longer conditions what follows
BEST_OF = 5  # candidates sampled at each temperature > 0
DEFAULT_BEAM_SIZE = 5  # openai-whisper's CLI and faster-whisper's default; 1 = greedy

FORMATS = tuple(suffix.lstrip(".") for suffix in TRANSCRIPT_SUFFIXES)  # srt, vtt, txt, json
BACKENDS = ("auto", "torch", "ct2")
COMPUTE_TYPES = ("auto", "float32", "float16", "bfloat16", "int8", "int8_float16", "int8_float32")


# --------------------------------------------------------------------------------------------
# Options and results


@dataclass
class TranscribeOptions:
    """What `transcribe_dir` does; the decoding fields also drive `transcribe_file`."""

    audio_dir: str = opt(None, "folder of audio files (searched recursively), or one audio file")
    save_dir: str = opt(None, "folder for the transcripts (subfolders of --audio-dir are mirrored)")
    model: str = opt("tiny.en", "model: OpenAI name, Hub id, HF folder, openai-whisper .pt "
                                "(training's best_model.pt) or CTranslate2 folder")
    language: str | None = opt(None, "spoken language, code or name (en, Spanish); omitted: detected "
                                     "per file on a multilingual model, en on an English-only one")
    task: str = opt("transcribe", "transcribe, or translate into English", choices=("transcribe", "translate"))
    format: str = opt("srt", "transcript format (all: srt, vtt, txt and json)", choices=(*FORMATS, "all"))
    batch_size: int = opt(4, "files decoded together (one 30 s window of each per step); with "
                             "--batched, chunks of up to 30 s decoded together")
    batched: bool = opt(False, "throughput mode: each file cut at pauses (Silero VAD) into chunks of up "
                               "to 30 s, decoded --batch-size at a time (faster-whisper's "
                               "BatchedInferencePipeline with ct2, which gives one segment a chunk): "
                               "faster on long files, but no chunk sees the text before it, and ct2 "
                               "makes no temperature fallback")
    beam_size: int = opt(DEFAULT_BEAM_SIZE, "beam width at temperature 0 (1 = greedy, fastest)")
    best_of: int = opt(BEST_OF, "candidates sampled at each fallback temperature")
    temperature: float = opt(0.0, "first decoding temperature")
    temperature_increment: float = opt(TEMPERATURE_INCREMENT, "temperature added on each fallback, "
                                       f"up to {MAX_TEMPERATURE} (0 = no fallback)")
    compression_ratio_threshold: float = opt(COMPRESSION_RATIO_THRESHOLD,
                                             "fall back when the text's gzip ratio is above this (inf = never)")
    logprob_threshold: float = opt(LOGPROB_THRESHOLD, "fall back when the mean token log-probability "
                                                      "is below this (-inf = never)")
    no_speech_threshold: float = opt(NO_SPEECH_THRESHOLD, "skip a window as silence when its "
                                     "<|nospeech|> probability is above this and the decode is unsure")
    condition_on_previous_text: bool = opt(True, "prompt each window with the text before it "
                                                 "(--no-condition-on-previous-text resists loops)")
    initial_prompt: str | None = opt(None, "text to prompt the first window with (names, spelling, style)")
    word_timestamps: bool = opt(False, "time each word (cross-attention alignment, as openai-whisper): "
                                       "words in the JSON output, and each segment from its first "
                                       "word's start to its last word's end")
    backend: str = opt("auto", "ct2: faster-whisper/CTranslate2 (the model converted once into the "
                               "cache); torch: this package's decoder (any model, GPU, Apple GPU or CPU); "
                               "auto: ct2 where faster-whisper is installed and can run the model, "
                               "else torch (the choice is printed)", choices=BACKENDS)
    device: str = opt("auto", "cuda, mps, cpu, or auto (a CUDA GPU, else an Apple GPU, else the CPU)")
    threads: int = opt(0, "CPU threads, all the run uses (0: all cores); with --backend ct2, shared by "
                          "the files decoded at once: --batch-size of them, at most one per thread")
    compute_type: str = opt("auto", "weights/activations: auto = float16 on GPU, float32 on CPU; "
                                    "int8* with --backend ct2 only", choices=COMPUTE_TYPES)
    audio_ctx: str | None = opt(None, "encoder context for audio under 30 s and a long file's last "
                                      "window: auto = the audio plus 1 s; N = N positions (50 per second) "
                                      "where the audio fits in them; full = always 30 s. Default: auto "
                                      "for a model trained with --dynamic-audio-ctx, else full")
    force: bool = opt(False, "allow --audio-ctx on a model not trained for it (it will likely "
                             "repeat itself or stop early)")
    overwrite: bool = opt(False, "transcribe again files whose transcripts already exist")

    def temperatures(self) -> tuple[float, ...]:
        if self.temperature_increment <= 0:
            return (self.temperature,)
        n = int(round((MAX_TEMPERATURE - self.temperature) / self.temperature_increment))
        return tuple(round(self.temperature + i * self.temperature_increment, 6) for i in range(max(n, 0) + 1))


@dataclass(frozen=True)
class Word:
    """One word with its time, as whisper's word timestamps give it (leading space included)."""

    start: float
    end: float
    word: str
    probability: float = 0.0  # mean probability of its tokens (0.0 where not known)


@dataclass
class Segment:
    """A stretch of speech: `text` spoken from `start` to `end` (seconds from the file's start)."""

    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)  # text and timestamp ids, as decoded
    avg_logprob: float = 0.0  # of the window's decode this segment came from
    no_speech_prob: float = 0.0  # of that window
    temperature: float = 0.0  # at which that window was finally decoded
    compression_ratio: float = 0.0  # gzip ratio of that window's text
    words: list[Word] | None = None  # with --word-timestamps


@dataclass
class Transcript:
    segments: list[Segment]
    language: str
    duration: float  # seconds of audio

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


# --------------------------------------------------------------------------------------------
# Shared by the backends


def check_language(code: str | None, task: str, multilingual: bool, source: str) -> str | None:
    """The language to decode in (None = detect per file)."""
    if not multilingual:
        if task == "translate":
            raise UserError(f"{source} is an English-only model: it cannot translate (use a multilingual one)")
        if code not in (None, "en"):
            print(f"warning: {source} is an English-only model; transcribing as English, not {code!r}",
                  file=sys.stderr)
        return "en"
    return code


class Stopped(Exception):
    """Work given up because the run is being left (Ctrl-C): nobody waits for its result."""

