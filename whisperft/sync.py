"""How a subtitle file's clock runs against its recording: a constant offset and a linear drift,
estimated from when the cues say words are spoken and when a voice-activity detector hears
speech. Pure numpy: the speech intervals come in from `vad.py`.

The model is `cue time = rate * speech time + offset`: subtitles timed for a video with a 2 s
intro have offset +2; subtitles timed at 25 fps for a 23.976 fps recording have rate 25/23.976.
The estimate is found in two steps, as subtitle synchronisers do (ffsubsync's first step is the
same correlation, over offsets only):
  1. coarse: the cues' on/off pattern, stretched by each candidate rate, is cross-correlated with
     the detector's (FFT, 10 ms frames); the best (rate, lag) wins;
  2. fine: each cue start/end is paired with the nearest speech onset/offset under the coarse
     fit, and a line is fitted to the pairs (outliers dropped); a drift is kept only when the
     data pins it down, otherwise the offset alone is fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

FRAME = 0.01  # seconds per frame of the activity patterns in the coarse search
MAX_OFFSET = 10.0  # seconds searched either way
MAX_DRIFT = 0.08  # rates from 1 - this to 1 + this are searched (25 vs 23.976 fps is 4.3%)
DRIFT_STEP = 0.0005  # rate step of the coarse search
EDGE_MATCH = 0.35  # seconds: a cue edge this close to a speech edge (after the coarse fit) is paired
TIMING_TOLERANCE = 0.2  # seconds: cues displaced less than this everywhere in a file count as on time
# When an estimate is sure enough to correct a file by it:
SURE_MIN_EDGES = 6  # paired cue edges
SURE_MIN_SHARE = 0.5  # of the cue edges
SURE_MAX_OFFSET_ERROR = 0.05  # seconds, standard error of the offset
SURE_MAX_RESIDUAL = 0.15  # seconds, median distance of paired edges from the fitted line


@dataclass(frozen=True)
class TimingFit:
    """`cue time = rate * speech time + offset`, and how sure that is."""

    offset: float  # seconds
    rate: float  # cue seconds per second of speech
    paired: int  # cue edges paired with a speech edge
    edges: int  # cue edges considered
    residual: float  # seconds: median |distance| of the paired edges from the line
    offset_error: float  # seconds: standard error of `offset`
    rate_error: float  # standard error of `rate` (0 when the drift was not fitted)
    sure: bool  # enough pairs, tight enough, to correct the file by this fit

    @property
    def drift(self) -> float:
        """rate - 1: 0.04 means the cues' clock runs 4% fast against the audio."""
        return self.rate - 1.0

    def to_speech(self, cue_time: float) -> float:
        """Where on the recording the moment a cue names at `cue_time` really is."""
        return (cue_time - self.offset) / self.rate

    def displacement(self, duration: float) -> float:
        """Seconds: the largest |cue time - speech time| over a recording of `duration`."""
        return max(abs(self.offset), abs(self.drift * duration + self.offset))

    def off(self, duration: float) -> bool:
        """Whether the cues are off by more than TIMING_TOLERANCE somewhere in the recording."""
        return self.displacement(duration) > TIMING_TOLERANCE

    def describe(self) -> str:
        text = f"offset {self.offset:+.2f} s"
        if self.rate != 1.0:
            text += f", drift {100 * self.drift:+.2f}%"
        how = "sure" if self.sure else "unsure"
        return f"{text} ({how}: {self.paired} of {self.edges} cue edges match speech, " \
               f"median miss {self.residual:.2f} s)"


def _activity(intervals: Sequence[tuple[float, float]], n_frames: int, scale: float = 1.0,
              outside: float = -1.0) -> np.ndarray:
    """+1 in the intervals (times divided by `scale`), `outside` elsewhere, on FRAME frames."""
    signal = np.full(n_frames, outside, dtype=np.float32)
    for start, end in intervals:
        lo = max(0, int(round(start / scale / FRAME)))
        hi = min(n_frames, int(round(end / scale / FRAME)))
        if hi > lo:
            signal[lo:hi] = 1.0
    return signal


def _coarse(cues: Sequence[tuple[float, float]], speech: Sequence[tuple[float, float]],
            duration: float) -> tuple[float, float]:
    """(rate, offset) maximising the agreement of the two activity patterns."""
    n_speech = int(math.ceil(duration / FRAME))
    lag_frames = int(MAX_OFFSET / FRAME)
    speech_signal = _activity(speech, n_speech)
    size = 1 << int(math.ceil(math.log2(n_speech + int((duration + MAX_OFFSET) * (1 + MAX_DRIFT) / FRAME)
                                          + 2 * lag_frames + 1)))
    speech_spectrum = np.conj(np.fft.rfft(speech_signal, size))
    last_cue_end = max(end for _, end in cues)
    best = (-math.inf, 1.0, 0.0)
    for rate in np.arange(1 - MAX_DRIFT, 1 + MAX_DRIFT + DRIFT_STEP / 2, DRIFT_STEP):
        n_cue = int(math.ceil(last_cue_end / rate / FRAME)) + 1
        cue_signal = _activity(cues, n_cue, scale=rate)
        # corr[k] = sum_t cue(t + k) * speech(t): cue time / rate = speech time + k frames
        corr = np.fft.irfft(np.fft.rfft(cue_signal, size) * speech_spectrum, size)
        candidates = np.concatenate([corr[:lag_frames + 1], corr[size - lag_frames:]])
        lags = np.concatenate([np.arange(lag_frames + 1), np.arange(-lag_frames, 0)])
        k = int(np.argmax(candidates))
        if candidates[k] > best[0]:
            best = (float(candidates[k]), float(rate), float(rate * lags[k] * FRAME))
    return best[1], best[2]


def _pairs(cues, speech, rate: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """(speech times, cue times) of cue edges paired with the nearest speech edge of the same
    kind (onset with start, offset with end) under the fit, within EDGE_MATCH."""
    xs, ys = [], []
    for kind in (0, 1):
        speech_edges = np.array(sorted(s[kind] for s in speech))
        for cue in cues:
            predicted = (cue[kind] - offset) / rate
            i = int(np.argmin(np.abs(speech_edges - predicted)))
            if abs(speech_edges[i] - predicted) <= EDGE_MATCH:
                xs.append(speech_edges[i])
                ys.append(cue[kind])
    return np.array(xs), np.array(ys)


def _line(xs: np.ndarray, ys: np.ndarray, drift: bool) -> tuple[float, float, float, float]:
    """(rate, offset, rate error, offset error) of ys = rate * xs + offset, least squares."""
    n = len(xs)
    if not drift:
        offset = float(np.mean(ys - xs))
        spread = float(np.std(ys - xs, ddof=1)) if n > 1 else math.inf
        return 1.0, offset, 0.0, spread / math.sqrt(n)
    rate, offset = np.polyfit(xs, ys, 1)
    residuals = ys - (rate * xs + offset)
    sigma2 = float(residuals @ residuals) / max(n - 2, 1)
    sxx = float(((xs - xs.mean()) ** 2).sum())
    if sxx <= 0:
        return float(rate), float(offset), math.inf, math.inf
    return (float(rate), float(offset), math.sqrt(sigma2 / sxx),
            math.sqrt(sigma2 * (1 / n + xs.mean() ** 2 / sxx)))


def _robust_line(xs: np.ndarray, ys: np.ndarray, drift: bool):
    """`_line` refitted without the pairs far off the first line; (fit, xs kept, ys kept)."""
    fit = _line(xs, ys, drift)
    residuals = np.abs(ys - (fit[0] * xs + fit[1]))
    keep = residuals <= 3 * np.median(residuals) + 0.02
    if keep.sum() >= 3 and not keep.all():
        xs, ys = xs[keep], ys[keep]
        fit = _line(xs, ys, drift)
    return fit, xs, ys


def estimate_timing(cues: Sequence[tuple[float, float]], speech: Sequence[tuple[float, float]],
                    duration: float) -> TimingFit | None:
    """The fit of cue (start, end) times against speech (start, end) intervals of a recording
    lasting `duration` seconds; None when there is nothing to compare (no cues or no speech)."""
    cues = [(s, e) for s, e in cues if e > s]
    if not cues or not speech or duration <= 0:
        return None
    rate, offset = _coarse(cues, speech, duration)
    edges = 2 * len(cues)
    xs, ys = _pairs(cues, speech, rate, offset)
    if len(xs) < 3:
        return TimingFit(offset, rate, len(xs), edges, math.inf, math.inf, math.inf, False)
    (rate, offset, _, _), _, _ = _robust_line(xs, ys, drift=True)
    xs, ys = _pairs(cues, speech, rate, offset)  # re-paired under the finer line
    if len(xs) < 3:
        return TimingFit(offset, rate, len(xs), edges, math.inf, math.inf, math.inf, False)
    fit, kept_x, kept_y = _robust_line(xs, ys, drift=True)
    # a drift is kept only where the pairs pin it down and it stands out from its error
    if not (fit[2] <= 0.002 and abs(fit[0] - 1) > 3 * fit[2]):
        fit, kept_x, kept_y = _robust_line(xs, ys, drift=False)
    rate, offset, rate_error, offset_error = fit
    residual = float(np.median(np.abs(kept_y - (rate * kept_x + offset))))
    paired = len(kept_x)
    sure = (paired >= SURE_MIN_EDGES and paired >= SURE_MIN_SHARE * edges
            and offset_error <= SURE_MAX_OFFSET_ERROR and residual <= SURE_MAX_RESIDUAL)
    return TimingFit(offset, rate, paired, edges, residual, offset_error, rate_error, sure)
