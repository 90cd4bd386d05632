"""The PyTorch decoding engine: `TorchTranscriber` transcribes audio of any length with a
transformers Whisper model, window by window, as Whisper does.

The long-form algorithm is openai-whisper's, as faster-whisper implements it, so that our
PyTorch backend and `--backend ct2` (faster-whisper itself) give the same greedy text:

  - the whole file's log-mel is computed once (features.py: faster-whisper's convention), its
    last frame dropped as faster-whisper does; a 30 s window starts at `seek` (the log-mel is
    the whole file's, clamped at its loudest bin, but computed a window at a time: `LongLogMel`);
  - the window is decoded with timestamp tokens, conditioned on the previous text
    (`<|startofprev|>` + at most 223 earlier tokens, timestamps included);
  - a decode that is too repetitive (gzip compression ratio of its text > 2.4) or too unsure
    (average log-probability < -1.0) is redone at the next temperature (0.2, 0.4, ... 1.0, best
    of 5 samples); the prompt is dropped for good after a decode hotter than 0.5;
  - a window whose `<|nospeech|>` probability is > 0.6 and whose decode is unsure is skipped;
  - the window is cut into segments at each pair of timestamp tokens, and `seek` moves to the
    last complete timestamp (or to the window's end when the decode ends in one timestamp).

Why our own loop rather than transformers' long-form `generate`: fed with the same features,
its greedy path gives the same text as faster-whisper (checked), but where the safeguards act
it differs: its compression ratio is computed on token-id bytes rather than on the text (so the
2.4 threshold means something else), it samples one candidate instead of the best of 5, it
resumes conditioning on the text from before a prompt reset, and it feeds empty/zero-length
segments back as prompt. The loop here keeps those semantics and batches across files: each
decoding step takes the next window of up to `batch_size` files (a finished file's slot is
refilled from the queue), with one `GenerationMixin.generate` call per step and temperature.
Windows of one file cannot be batched: where the next one starts depends on the last one.

Default beam size 5, as faster-whisper and openai-whisper's command line use: WERs are then
comparable with theirs. `--beam-size 1` (greedy) is 1.5-3x faster on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .audio import FRAMES_PER_SECOND, N_FRAMES, SAMPLE_RATE, TIME_PRECISION, AudioError, pad_or_trim, stream_audio
from .errors import UserError
from .features import LongLogMel
from .tokens import TokenLayout, language_code
from .transcription import PROMPT_RESET_TEMPERATURE, Segment, Transcript, TranscribeOptions, check_language, Stopped
from . import audio_ctx, word_timing


def compression_ratio(text: str) -> float:
    """Bytes of `text` over bytes of its zlib compression: > 2.4 marks a repetition loop."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _stoppable(chunks: Iterator, stop: threading.Event | None) -> Iterator:
    """`chunks`, raising Stopped at the next one once `stop` is set."""
    with contextlib.closing(chunks):
        for chunk in chunks:
            if stop is not None and stop.is_set():
                raise Stopped
            yield chunk


@dataclass
class _Decode:
    """One window's decode: generated ids (no prompt, no <|endoftext|>) and their scores."""

    tokens: list[int]
    avg_logprob: float
    compression_ratio: float = 0.0
    temperature: float = 0.0


class _LogprobTracker:
    """Logits processor that sums, per row, the log-probability of each chosen token under the
    processed (suppressed, timestamp-ruled) distribution at temperature 1, up to and including
    <|endoftext|>: openai-whisper's `sum_logprobs`, without keeping every step's scores."""

    def __init__(self, eot: int):
        self.eot = eot
        self.last: torch.Tensor | None = None
        self.total: np.ndarray | None = None
        self.done: np.ndarray | None = None

    def _take(self, chosen: torch.Tensor) -> None:
        # summed in float64 on the host: Apple GPUs (MPS) have no float64
        lp = self.last.gather(1, chosen[:, None])[:, 0].cpu().numpy().astype(np.float64)
        self.total += np.where(self.done, 0.0, lp)
        self.done |= (chosen == self.eot).cpu().numpy()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.last is None:
            self.total = np.zeros(scores.shape[0], dtype=np.float64)
            self.done = np.zeros(scores.shape[0], dtype=bool)
        else:
            self._take(input_ids[:, -1])
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> list[float]:
        # the last token chosen was never seen by a following call
        if self.last is not None:
            self._take(sequences[:, -1])
        return self.total.tolist() if self.total is not None else [0.0] * sequences.shape[0]


class _SuppressTokens:
    """Logits processor: -inf for `suppress` ids at every step, and for `begin_suppress` ids at
    the first generated position. transformers' own pair rebuilds its mask with `torch.isin`
    over the whole vocabulary at every step, which costs more than a tiny model's decoder step."""

    def __init__(self, suppress: list[int], begin_suppress: list[int], begin_index: int,
                 vocab_size: int, device):
        self.always = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.always[list(suppress)] = True
        self.first = self.always.clone()
        self.first[list(begin_suppress)] = True
        self.begin_index = begin_index

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = self.first if input_ids.shape[1] == self.begin_index else self.always
        return scores.masked_fill(mask[:scores.shape[-1]], -float("inf"))


@functools.lru_cache(maxsize=None)
def _beam_cache_class():
    """An encoder-decoder cache whose beam reordering leaves the cross-attention keys/values
    alone: they are the same for every beam of an input (computed from the same audio), and
    transformers' copy of them at every step costs more than the decoder step of a small model."""
    from transformers.cache_utils import EncoderDecoderCache

    class BeamCache(EncoderDecoderCache):
        def reorder_cache(self, beam_idx: torch.LongTensor):
            # beam_idx only moves rows among the beams of one input: cross-attention is unchanged
            self.self_attention_cache.reorder_cache(beam_idx)

    return BeamCache


@contextlib.contextmanager
def _swapped_generation_config(model, config):
    """`model.generation_config = config` while `generate` runs."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


@dataclass
class _FileState:
    """Decoding state of one file (openai-whisper's `transcribe()` locals)."""

    key: object
    # the log-mel (n_mels, content_frames) on the model's device; or, for a file longer than one
    # window, its LongLogMel, which computes a window's frames when asked (the file's log-mel
    # plus its last frame, not content: see `content_frames`)
    features: torch.Tensor | LongLogMel
    duration: float
    language: str | None
    seek: int = 0
    all_tokens: list[int] = field(default_factory=list)
    prompt_reset_since: int = 0
    segments: list[Segment] = field(default_factory=list)
    last_speech: float = 0.0  # end of the last timed word (--word-timestamps)
    _window: tuple[int, torch.Tensor] | None = field(default=None, repr=False)  # (seek, window)

    @property
    def content_frames(self) -> int:
        if isinstance(self.features, LongLogMel):
            # faster-whisper's content_frames: the frame of the 10 ms zero padding is not content
            return max(self.features.n_frames - 1, 0)
        return self.features.shape[-1]

    def window(self) -> tuple[torch.Tensor, int]:
        """The 30 s window at `seek`, padded with 0.0 in log-mel space, and its real length."""
        size = min(N_FRAMES, self.content_frames - self.seek)
        if self._window is None or self._window[0] != self.seek:
            if isinstance(self.features, LongLogMel):
                feats = self.features.frames(self.seek, self.seek + size)
            else:
                feats = self.features[:, self.seek:self.seek + size]
            self._window = (self.seek, pad_or_trim(feats, N_FRAMES, value=0.0))
        return self._window[1], size

    def close(self) -> None:
        """Done with this file: let go of its window (and of its audio file)."""
        self._window = None
        if isinstance(self.features, LongLogMel):
            self.features.close()


class TorchTranscriber:
    """Long-form decoding with a `WhisperBundle` (transformers model), batched across files."""

    def __init__(self, bundle, options: TranscribeOptions | None = None):
        self.bundle = bundle
        self.opts = options or TranscribeOptions()
        self.model = bundle.model
        gen = self.model.generation_config
        tok = bundle.tokenizer
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.multilingual = bundle.is_multilingual
        self.language = check_language(language_code(self.opts.language), self.opts.task,
                                        self.multilingual, bundle.source)
        self.max_length = self.model.config.max_target_positions  # 448 tokens of decoder context
        try:  # it checks that timestamp tokens follow <|notimestamps|>, as the timestamp rules assume
            layout = TokenLayout(tok, self.multilingual, self.max_length)
        except UserError as exc:
            raise UserError(f"{bundle.source}: {exc}") from None
        if layout.no_speech is None or layout.no_speech == tok.unk_token_id:
            raise UserError(f"{bundle.source}: tokenizer has neither <|nospeech|> nor <|nocaptions|>")
        self.eot, self.sot, self.sot_prev = layout.eot, layout.sot, layout.sot_prev
        self.no_timestamps = layout.no_timestamps
        if self.opts.word_timestamps and not getattr(gen, "alignment_heads", None):
            raise UserError(f"{bundle.source}: the model names no alignment heads, which "
                            f"--word-timestamps needs (its generation_config.alignment_heads)")
        self.timestamp_begin, self.no_speech = layout.timestamp_begin, layout.no_speech
        self.max_prompt = layout.max_prompt_tokens  # openai-whisper keeps 223 previous tokens
        # `generate` fills the (None) suppress lists of the config it is given from the model's
        # and adds its own suppressors, slow ones, beside ours: it is shown a copy without them
        self._bare_config = copy.deepcopy(gen)
        self._bare_config.suppress_tokens = None
        self._bare_config.begin_suppress_tokens = None
        self.audio_ctx = audio_ctx.resolve(self.opts.audio_ctx, audio_ctx.is_marked(gen), self.opts.force,
                                           bundle.source)
        self.initial_prompt = (tok.encode(" " + self.opts.initial_prompt.strip(), add_special_tokens=False)
                               if self.opts.initial_prompt else [])

    # -- prompts -----------------------------------------------------------------------------

    def sot_sequence(self, language: str | None) -> list[int]:
        if not self.multilingual:
            return [self.sot]
        gen = self.model.generation_config
        return [self.sot, gen.lang_to_id[f"<|{language}|>"], gen.task_to_id[self.opts.task]]

    def _prompt(self, st: _FileState) -> tuple[list[int], list[int]]:
        """(prefix ending at <|startoftranscript|>, rest of the sot sequence)."""
        previous = st.all_tokens[st.prompt_reset_since:]
        prefix = [self.sot_prev] + previous[-self.max_prompt:] if previous else []
        sot_seq = self.sot_sequence(st.language)
        return prefix + sot_seq[:1], sot_seq[1:]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.eot, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- model calls -------------------------------------------------------------------------

    def _encode(self, windows: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        n = audio_ctx.positions_to_use(self.audio_ctx, max(sizes))
        return audio_ctx.encode(self.model.model.encoder, windows.to(self.device, self.dtype), n)

    def _no_speech_probs(self, enc: torch.Tensor, prefixes: list[list[int]]) -> list[float]:
        """P(<|nospeech|>) predicted at the <|startoftranscript|> position (openai-whisper's)."""
        ids, mask = self._left_pad(prefixes)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.model.decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                                          encoder_hidden_states=enc, use_cache=False).last_hidden_state
        logits = self.model.proj_out(hidden[:, -1]).float()
        return logits.softmax(-1)[:, self.no_speech].tolist()

    def _rules(self, begin_index: int) -> list:
        """The logits processors of a decode whose first generated token is at `begin_index`."""
        from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor

        gen = self.model.generation_config
        return [_SuppressTokens(gen.suppress_tokens or [], gen.begin_suppress_tokens or [], begin_index,
                                self.model.config.vocab_size, self.device),
                WhisperTimeStampLogitsProcessor(gen, begin_index=begin_index)]

    def _generate(self, enc: torch.Tensor, prompts: list[list[int]], temperature: float) -> list[_Decode]:
        """One decode per row of `enc`: beam search at temperature 0 (greedy if beam_size 1),
        else the best of `best_of` samples."""
        from transformers import GenerationConfig
        from transformers.generation import GenerationMixin, LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput

        sampling = temperature > 0
        beams = 1 if sampling else max(1, self.opts.beam_size)
        # Beam search returns all its finished hypotheses: transformers ranks them by sum of
        # log-probs / length counting <|endoftext|>, CTranslate2 by sum / length without it, which
        # can prefer a longer one (a silent window's " You" or "Thank you for watching!"); they are
        # re-ranked below as samples are, by CTranslate2's rule.
        n_return = max(1, self.opts.best_of) if sampling else beams
        ids, mask = self._left_pad(prompts)
        width = ids.shape[1]
        # Flags that do not apply to the search chosen are left out: transformers warns about them.
        search: dict = {"do_sample": sampling, "num_beams": beams, "num_return_sequences": n_return}
        if sampling:  # from the whole distribution, as openai-whisper samples (no top-k)
            search.update(temperature=temperature, top_k=0, top_p=1.0)
        if beams > 1:  # stop once `beams` hypotheses have ended, as CTranslate2 does; score them
            # under the suppressed, renormalised distribution
            search.update(early_stopping=True, length_penalty=1.0, renormalize_logits=True)
        cfg = GenerationConfig(
            decoder_start_token_id=self.sot, bos_token_id=self.eot, eos_token_id=self.eot,
            pad_token_id=self.eot, max_length=self.max_length,  # prompt included: 448 positions
            return_dict_in_generate=True, output_scores=False, use_cache=True, **search,
        )
        # openai-whisper's order: suppress blank/non-speech tokens, then the timestamp rules
        processors = self._rules(width)
        tracker = _LogprobTracker(self.eot) if beams == 1 else None
        if tracker is not None:
            processors.append(tracker)
        extra = {}
        if beams > 1:
            from transformers.cache_utils import DynamicCache

            config = self.model.config
            extra["cache"] = _beam_cache_class()(DynamicCache(config=config), DynamicCache(config=config))
        with _swapped_generation_config(self.model, self._bare_config):
            out = GenerationMixin.generate(
                self.model, encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                # the encoder sees no padding; saying so keeps `generate` from warning about it
                attention_mask=torch.ones(enc.shape[:2], dtype=torch.long, device=self.device),
                decoder_input_ids=ids, decoder_attention_mask=mask, generation_config=cfg,
                logits_processor=LogitsProcessorList(processors), **extra)
        rows = [seq[:seq.index(self.eot) + 1] if self.eot in seq else seq
                for seq in out.sequences[:, width:].tolist()]
        if tracker is not None:
            sums = tracker.finish(out.sequences)
        else:  # beam search keeps no per-token scores unless every step's are stored: rescore
            per = len(rows) // ids.shape[0]  # the rows of an input are together
            sums = self._rescore(enc.repeat_interleave(per, 0), ids.repeat_interleave(per, 0),
                                 mask.repeat_interleave(per, 0), rows)
        decodes = [_Decode(r[:-1] if r and r[-1] == self.eot else r, total / (len(r) - (self.eot in r) + 1),
                           temperature=temperature) for r, total in zip(rows, sums)]
        if n_return > 1:  # CTranslate2's (and openai-whisper's) ranking: sum of log-probs (with
            # <|endoftext|>'s) / number of tokens (without it); an empty row never finished
            groups = [decodes[i:i + n_return] for i in range(0, len(decodes), n_return)]
            decodes = [max(g, key=lambda d: d.avg_logprob * (len(d.tokens) + 1) / len(d.tokens)
                           if d.tokens else -float("inf")) for g in groups]
        for d in decodes:
            d.compression_ratio = compression_ratio(self._text(d.tokens).strip())
        return decodes

    def _rescore(self, enc: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                 rows: list[list[int]]) -> list[float]:
        """Sum of log-probabilities of each row's generated tokens (after the prompt `ids`), under
        the distribution the search used: suppressed, timestamp-ruled, renormalised."""
        width, steps = ids.shape[1], max(len(r) for r in rows)
        if steps == 0:
            return [0.0] * len(rows)
        full = torch.full((len(rows), width + steps), self.eot, dtype=torch.long, device=self.device)
        full[:, :width] = ids
        for i, r in enumerate(rows):
            full[i, width:width + len(r)] = torch.tensor(r, dtype=torch.long)
        full_mask = torch.cat([mask, torch.ones((len(rows), steps), dtype=mask.dtype, device=mask.device)], 1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.model.decoder(input_ids=full, attention_mask=full_mask, position_ids=positions,
                                          encoder_hidden_states=enc, use_cache=False).last_hidden_state
        chain = self._rules(width)
        lengths = np.array([len(r) for r in rows])
        total = np.zeros(len(rows), dtype=np.float64)  # on the host: MPS has no float64
        for t in range(steps):
            scores = torch.log_softmax(self.model.proj_out(hidden[:, width + t - 1]).float(), -1)
            for proc in chain:
                scores = proc(full[:, :width + t], scores)
            lp = torch.log_softmax(scores, -1).gather(1, full[:, width + t, None])[:, 0]
            total += np.where(t < lengths, lp.cpu().numpy().astype(np.float64), 0.0)
        return total.tolist()

    def _text(self, tokens: list[int]) -> str:
        return self.bundle.tokenizer.decode([t for t in tokens if t < self.eot])

    def _decode_with_fallback(self, enc: torch.Tensor, prompts: list[list[int]],
                              no_speech: list[float]) -> list[_Decode]:
        o = self.opts
        temperatures = o.temperatures()
        final: list[_Decode | None] = [None] * len(prompts)
        tried: list[list[_Decode]] = [[] for _ in prompts]
        below_cr: list[list[_Decode]] = [[] for _ in prompts]
        todo = list(range(len(prompts)))
        for temperature in temperatures:
            decodes = self._generate(enc[todo], [prompts[i] for i in todo], temperature)
            still = []
            for i, d in zip(todo, decodes):
                tried[i].append(d)
                needs_fallback = False
                if d.compression_ratio > o.compression_ratio_threshold:
                    needs_fallback = True  # too repetitive
                else:
                    below_cr[i].append(d)
                if d.avg_logprob < o.logprob_threshold:
                    needs_fallback = True  # too unsure
                if no_speech[i] > o.no_speech_threshold and d.avg_logprob < o.logprob_threshold:
                    needs_fallback = False  # silence: will be skipped, not redone
                if needs_fallback:
                    still.append(i)
                else:
                    final[i] = d
            todo = still
            if not todo:
                break
        for i in todo:  # every temperature failed: the likeliest decode, at the last temperature
            best = max(below_cr[i] or tried[i], key=lambda d: d.avg_logprob)
            final[i] = dataclasses.replace(best, temperature=temperatures[-1])
        return final  # type: ignore[return-value]

    @torch.inference_mode()
    def _detect_languages(self, states: list[_FileState]) -> None:
        """Language of each file from its first 30 s (as faster-whisper does)."""
        windows = torch.stack([st.window()[0] for st in states])
        lang_ids = self.model.detect_language(input_features=windows.to(self.device, self.dtype))
        id_to_lang = {v: k[2:-2] for k, v in self.model.generation_config.lang_to_id.items()}
        for st, lid in zip(states, lang_ids.view(-1).tolist()):
            st.language = id_to_lang[lid]

    # -- the long-form loop ------------------------------------------------------------------

    def open_audio(self, path: str | Path, stop: threading.Event | None = None) -> LongLogMel:
        """The features of the audio file `path`, for `run` in place of its samples: the file is
        read once here (for the log-mel's peak), then again window by window as it is decoded,
        so that neither it nor its log-mel is ever held whole. Once `stop` is set, reading it
        raises Stopped (Ctrl-C while it is read in the background: see `_prefetch`)."""
        return LongLogMel(lambda: _stoppable(stream_audio(path), stop), self.bundle.n_mels,
                          device=self.device, source=str(path))

    @torch.inference_mode()
    def _start(self, key, audio: np.ndarray | LongLogMel) -> _FileState:
        if not isinstance(audio, LongLogMel):
            samples = np.asarray(audio, dtype=np.float32)
            audio = LongLogMel(lambda: [samples], self.bundle.n_mels, device=self.device)
        feats: torch.Tensor | LongLogMel = audio
        if audio.whole is not None:  # at most one window: its log-mel, computed whole
            # faster-whisper's content_frames: the frame of the 10 ms zero padding is not content
            feats = audio.whole[:, :max(audio.whole.shape[-1] - 1, 0)]
        st = _FileState(key, feats, audio.n_samples / SAMPLE_RATE, self.language)
        st.all_tokens = list(self.initial_prompt)
        return st

    @staticmethod
    @torch.inference_mode()
    def _ready(states: list[_FileState], finished: deque) -> list[_FileState]:
        """The `states` whose window at `seek` could be computed (each keeps it for `_step`); a
        file that cannot be read again is given up, its AudioError put in `finished`."""
        ready = []
        for st in states:
            try:
                st.window()
            except AudioError as exc:
                st.close()
                finished.append((st.key, exc))
                continue
            ready.append(st)
        return ready

    @torch.inference_mode()
    def _step(self, states: list[_FileState]) -> None:
        """Decode the window at `seek` of every state and move each one on."""
        o = self.opts
        windows, sizes = zip(*(st.window() for st in states))
        enc = self._encode(torch.stack(windows), sizes)
        parts = [self._prompt(st) for st in states]
        no_speech = self._no_speech_probs(enc, [p[0] for p in parts])
        decodes = self._decode_with_fallback(enc, [p[0] + p[1] for p in parts], no_speech)
        for st, size, d, nsp, encoded in zip(states, sizes, decodes, no_speech, enc):
            if nsp > o.no_speech_threshold and d.avg_logprob <= o.logprob_threshold:
                st.seek += size  # silence: on to the next window
                continue
            self._add_segments(st, d, size, nsp, encoded)
            if not o.condition_on_previous_text or d.temperature > PROMPT_RESET_TEMPERATURE:
                st.prompt_reset_since = len(st.all_tokens)

    def _add_segments(self, st: _FileState, d: _Decode, size: int, no_speech: float,
                      encoded: torch.Tensor | None = None) -> None:
        """Cut a window's tokens at timestamp pairs into segments; move `seek` (faster-whisper's
        `_split_segments_by_timestamps`); with --word-timestamps, time their words (`encoded`:
        the window's encoder output)."""
        tokens, tb = d.tokens, self.timestamp_begin
        time_offset = st.seek / FRAMES_PER_SECOND
        pieces: list[word_timing.Piece] = []
        single_timestamp_ending = len(tokens) >= 2 and tokens[-2] < tb <= tokens[-1]
        consecutive = [i for i in range(1, len(tokens)) if tokens[i] >= tb and tokens[i - 1] >= tb]
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
            last = 0
            for cut in slices:
                piece = tokens[last:cut]
                pieces.append(word_timing.Piece(time_offset + (piece[0] - tb) * TIME_PRECISION,
                                                time_offset + (piece[-1] - tb) * TIME_PRECISION, piece))
                last = cut
            if single_timestamp_ending:
                st.seek += size  # no speech after the last timestamp
            else:  # the last segment is unfinished: redo it from its start in the next window
                st.seek += (tokens[last - 1] - tb) * audio_ctx.FRAMES_PER_POSITION
        else:
            duration = size / FRAMES_PER_SECOND
            stamps = [t for t in tokens if t >= tb]
            if stamps and stamps[-1] != tb:
                duration = (stamps[-1] - tb) * TIME_PRECISION
            pieces.append(word_timing.Piece(time_offset, time_offset + duration, tokens))
            st.seek += size
        if encoded is not None and self.opts.word_timestamps:
            self._time_words(st, pieces, encoded, size, time_offset, single_timestamp_ending)
        for p in pieces:
            text = self._text(p.tokens)
            if p.start == p.end or not text.strip():
                continue  # not output, not fed back as prompt (faster-whisper's rule)
            st.all_tokens.extend(p.tokens)
            end = min(p.end, st.duration)
            st.segments.append(Segment(round(min(p.start, end), 3), round(end, 3), text, p.tokens,
                                       d.avg_logprob, no_speech, d.temperature, d.compression_ratio,
                                       word_timing.as_words(p.words) if self.opts.word_timestamps else None))

    def _time_words(self, st: _FileState, pieces: list, encoded: torch.Tensor, size: int,
                    time_offset: float, single_timestamp_ending: bool) -> None:
        """Words of a window's pieces, timed (word_timing.py); the next window starts at the last
        word's end unless this one ended in silence (faster-whisper's rule)."""
        text_tokens = [t for p in pieces for t in p.tokens if t < self.eot]
        alignment = word_timing.find_alignment(
            self.model, self.bundle.tokenizer, encoded, self.sot_sequence(st.language) + [self.no_timestamps],
            text_tokens, self.eot, size, st.language or "en")
        st.last_speech = word_timing.add_word_timestamps(pieces, alignment, time_offset, self.eot, st.last_speech)
        if not single_timestamp_ending:
            st.seek = word_timing.seek_after_words(pieces, time_offset, st.seek)

    def run(self, items: Iterable[tuple[object, np.ndarray | Exception]]
            ) -> Iterator[tuple[object, Transcript | Exception]]:
        """Transcribe `(key, audio)` pairs, `batch_size` files at a time; yield `(key, Transcript)`
        as each file finishes (an Exception in place of audio is passed through)."""
        source = iter(items)
        active: list[_FileState] = []
        finished: deque = deque()
        batch = max(1, self.opts.batch_size)
        exhausted = False
        while True:
            new = []
            while not exhausted and len(active) + len(new) < batch:
                try:
                    key, audio = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if isinstance(audio, Exception):
                    finished.append((key, audio))
                    continue
                st = self._start(key, audio)
                (new if st.content_frames > 0 else active).append(st)
            if new:
                new = self._ready(new, finished)
                undetected = [st for st in new if st.language is None]
                if undetected:
                    self._detect_languages(undetected)
                active += new
            for st in [st for st in active if st.seek >= st.content_frames]:
                active.remove(st)
                st.close()
                finished.append((st.key, Transcript(st.segments, st.language or "en", st.duration)))
            active = self._ready(active, finished)
            while finished:
                yield finished.popleft()  # outside inference mode: it is the caller's thread too
            if not active:
                if exhausted:
                    return
                continue
            self._step(active)
