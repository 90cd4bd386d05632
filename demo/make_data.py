"""Generate the demo dataset: medical dictation read by espeak-ng, as long recordings + SRT.

    python demo/make_data.py OUT_DIR [--scale 1.0]

writes, for each split in train/dev/test,

    OUT_DIR/{split}_audio/{split}_NN_{voice}.wav        16 kHz mono 16-bit PCM, 40-120 s
    OUT_DIR/{split}_transcripts/{split}_NN_{voice}.srt  one cue per sentence, exact times

Why this domain: Whisper tiny.en knows everyday English but mangles drug names
("metoprolol" -> "murder run out", "atorvastatin" -> "at or master") and clinical terms, while
the sentences around them are ordinary English it already handles. Train, dev and test share
the drugs and terms but never a sentence, so a fine-tune can only win on test by learning the
vocabulary and the voices, not by memorising text.

Everything is deterministic: espeak-ng is a pure rule-based synthesiser (same text and
settings -> same samples), the pauses come from a PRNG seeded by the recording's name, and
files are written atomically, so re-running gives the same bytes.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import srt

SAMPLE_RATE = 16000  # Hz, what Whisper is trained on and what we write
ESPEAK_RATE = 22050  # Hz, espeak-ng's fixed output rate for its own (non-MBROLA) voices
SAMPLES_PER_MS = SAMPLE_RATE // 1000  # 16; every cue and pause is a whole number of ms
GAP_MIN_S, GAP_MAX_S = 0.3, 0.8  # seconds of silence between two sentences
LEAD_IN_S = 0.5  # seconds of silence before the first sentence
TAIL_S = 1.0  # seconds of silence after the last one, so the final cue is not at the edge
SILENCE_DBFS = -45.0  # below this a sample counts as silence when trimming espeak's padding
TRIM_MARGIN_MS = 10  # kept around the speech so word onsets and decays are not clipped
ESPEAK_TIMEOUT_S = 60  # one sentence takes ~30 ms; anything near this is a hung process

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker setting; a recording is read by a single voice."""

    key: str  # short name used in file names
    espeak_voice: str  # -v: language[+variant]
    speed_wpm: int  # -s: words per minute (espeak's default is 175)
    pitch: int  # -p: 0-99 (default 50)

    def args(self) -> list[str]:
        return ["-v", self.espeak_voice, "-s", str(self.speed_wpm), "-p", str(self.pitch)]


VOICES = {
    v.key: v
    for v in (
        Voice("us-m", "en-us", 160, 50),
        Voice("gb-m", "en", 150, 40),
        Voice("us-f", "en-us+f3", 165, 62),
        Voice("rp-m", "en-gb-x-rp", 170, 45),
        Voice("gb-f", "en+f2", 155, 58),
        Voice("es-m", "es", 150, 45),
        Voice("es-f", "es+f3", 155, 60),
    )
}

# split -> the voice of each recording, in order. Dev and test reuse training voices: the
# demo measures learning the domain (and these voices), not generalising to unseen speakers.
RECORDING_VOICES = {
    "train": ("us-m", "gb-m", "us-f", "rp-m", "gb-f"),
    "dev": ("us-f",),
    "test": ("us-m", "rp-m"),
}

# Written the way a transcriptionist would, and the way Whisper writes English: doses, ages,
# percentages and lab values in digits, small counts of days/weeks in words.
TRAIN_SENTENCES = (
    "The patient is a 67-year-old man with hypertension, hyperlipidemia and paroxysmal atrial fibrillation.",
    "He was started on metoprolol succinate 25 milligrams once daily for rate control.",
    "Continue atorvastatin 40 milligrams at bedtime.",
    "Hydrochlorothiazide 12.5 milligrams every morning was added for blood pressure control.",
    "Blood pressure today is 148 over 92 with a heart rate of 88.",
    "Apixaban 5 milligrams twice daily was started for stroke prevention.",
    "The echocardiogram showed an ejection fraction of 35% with moderate mitral regurgitation.",
    "She complains of orthopnea and paroxysmal nocturnal dyspnea for the past two weeks.",
    "On examination there are bibasilar crackles and bilateral lower extremity edema.",
    "Furosemide 40 milligrams intravenously twice daily was given for the bibasilar crackles with good diuresis.",
    "Spironolactone 25 milligrams daily was added after her potassium normalized.",
    "Lisinopril was discontinued because of angioedema.",
    "Losartan 50 milligrams daily was started instead of lisinopril.",
    "Her creatinine rose from 1.1 to 1.6 after the furosemide was increased.",
    "Hemoglobin A1C is 8.4%, up from 7.2% in March.",
    "Continue metformin 1000 milligrams twice daily and recheck the hemoglobin A1C in three months.",
    "Empagliflozin 10 milligrams daily was added for diabetes and congestive heart failure.",
    "Insulin glargine 20 units at bedtime, and titrate by 2 units every three days unless there is hypoglycemia.",
    "Levothyroxine 75 micrograms every morning on an empty stomach for hypothyroidism.",
    "Pantoprazole 40 milligrams daily for gastroesophageal reflux disease.",
    "The electrocardiogram showed atrial fibrillation with rapid ventricular response.",
    "Troponin was negative twice and myocardial infarction was ruled out.",
    "Clopidogrel 75 milligrams daily was continued after the coronary stent placement.",
    "Warfarin was held for a supratherapeutic INR of 4.2.",
    "Amlodipine 10 milligrams daily caused ankle edema and was reduced to 5 milligrams.",
    "Carvedilol 6.25 milligrams twice daily was started for the cardiomyopathy with an ejection fraction of 30%.",
    "The chest x-ray shows a right lower lobe consolidation consistent with pneumonia.",
    "Ceftriaxone 1 gram intravenously every 24 hours and azithromycin 500 milligrams daily were started.",
    "Vancomycin was added for cellulitis with suspected methicillin-resistant Staphylococcus aureus.",
    "The cellulitis of the left lower leg is improving, so vancomycin was changed to cephalexin.",
    "Prednisone 40 milligrams daily for five days for the COPD exacerbation.",
    "Albuterol nebulizer every 4 hours as needed for wheezing from COPD.",
    "Albuterol inhaler as needed and montelukast 10 milligrams at bedtime for asthma.",
    "Gabapentin 300 milligrams three times daily for diabetic peripheral neuropathy.",
    "Sertraline 50 milligrams daily for depression, and we will reassess in six weeks.",
    "Her myalgias resolved after atorvastatin was changed to rosuvastatin.",
    "Ondansetron 4 milligrams every 8 hours as needed for nausea.",
    "Repeat chest x-ray shows the consolidation is improving on ceftriaxone.",
    "CT of the abdomen shows sigmoid diverticulitis without abscess.",
    "Rosuvastatin 20 milligrams daily was chosen because of myalgias on atorvastatin.",
    "Potassium chloride 20 milliequivalents daily while on furosemide.",
    "Deep vein thrombosis of the right popliteal vein was confirmed on duplex ultrasound.",
    "Anticoagulation with apixaban will continue for three months.",
    "Urinalysis is consistent with pyelonephritis, and ceftriaxone was started while the culture is pending.",
    "Lungs are clear to auscultation bilaterally with no wheezes or rhonchi.",
    "The heart has an irregularly irregular rhythm with a grade 2 systolic murmur of mitral regurgitation.",
    "The abdomen is soft, nontender and nondistended with normal bowel sounds.",
    "Follow-up with cardiology in two weeks and nephrology in one month.",
    "Check a basic metabolic panel and magnesium level in one week.",
    "Continue clopidogrel, hydrochlorothiazide and metoprolol at the current doses.",
    "Sodium is 131, potassium is 5.2 and creatinine is 1.3.",
    "Thyroid stimulating hormone was 9.8, so levothyroxine was increased for hypothyroidism.",
    "She denies chest pain, palpitations or syncope but has dyspnea on exertion.",
    "He has a history of chronic kidney disease stage 3, hyperlipidemia and gout.",
    "Prednisone 20 milligrams daily was used instead of colchicine for the gout flare.",
    "Metformin is on hold because the glomerular filtration rate is below 30, and nephrology was consulted.",
    "Diltiazem was started for atrial fibrillation, and a repeat echocardiogram is planned.",
    "Troponin peaked at 2.3, consistent with a non-ST elevation myocardial infarction.",
    "Enoxaparin 40 milligrams subcutaneously daily for venous thromboembolism prophylaxis.",
    "Her hypoglycemia resolved after insulin glargine was reduced to 14 units.",
    "The INR has been labile on warfarin, so we discussed switching to apixaban.",
    "Metoprolol tartrate 50 milligrams twice daily was changed to carvedilol.",
    "Her orthopnea improved on empagliflozin, spironolactone and losartan.",
    "Her blood pressure has been labile, so amlodipine was started at 5 milligrams daily.",
    "Gabapentin was reduced to 100 milligrams at bedtime for neuropathy because of drowsiness.",
)

DEV_SENTENCES = (
    "He is a 64-year-old man with diabetes, hyperlipidemia and coronary artery disease.",
    "Continue clopidogrel 75 milligrams daily and atorvastatin 80 milligrams at bedtime.",
    "Carvedilol was increased to 12.5 milligrams twice daily.",
    "The echocardiogram showed left ventricular hypertrophy with an ejection fraction of 60%.",
    "She denies orthopnea but has mild dyspnea on exertion.",
    "Furosemide 40 milligrams daily and potassium chloride 10 milliequivalents daily.",
    "Creatinine is 1.4 and potassium is 4.8.",
    "Metformin was held for the CT of the abdomen.",
    "Vancomycin and ceftriaxone were started for cellulitis with fever.",
    "Sertraline was increased to 100 milligrams daily.",
    "Lungs are clear to auscultation with trace bilateral lower extremity edema.",
    "Apixaban was held before the procedure and restarted the next day.",
)

TEST_SENTENCES = (
    "The patient is a 58-year-old woman with atrial fibrillation, hypertension and hypothyroidism.",
    "Continue apixaban 5 milligrams twice daily and metoprolol 50 milligrams twice daily.",
    "Atorvastatin was switched to rosuvastatin 10 milligrams daily because of myalgias.",
    "Hydrochlorothiazide 25 milligrams daily was stopped because her sodium was 129.",
    "The echocardiogram showed an ejection fraction of 40% with mild mitral regurgitation.",
    "He reports orthopnea and bilateral lower extremity edema for one week.",
    "Furosemide 20 milligrams daily was increased to 40 milligrams twice daily.",
    "Hemoglobin A1C is 9.1%, so empagliflozin was added to metformin.",
    "Levothyroxine was increased to 88 micrograms every morning.",
    "The chest x-ray shows bilateral consolidation, and ceftriaxone was started for pneumonia.",
    "There are bibasilar crackles, and the heart has an irregularly irregular rhythm.",
    "Troponin was elevated, and cardiology was consulted for possible myocardial infarction.",
    "Warfarin was changed to apixaban because of a labile INR.",
    "Prednisone 20 milligrams daily and albuterol every 4 hours for the COPD exacerbation.",
    "Gabapentin was increased to 600 milligrams three times daily for neuropathy.",
    "Spironolactone was held because potassium was 5.6 and creatinine was 2.1.",
    "Losartan 100 milligrams daily and amlodipine 5 milligrams daily for blood pressure.",
    "Follow-up with nephrology in three weeks with a basic metabolic panel.",
    "Insulin glargine was reduced to 16 units at bedtime because of hypoglycemia.",
)

SENTENCES = {"train": TRAIN_SENTENCES, "dev": DEV_SENTENCES, "test": TEST_SENTENCES}

# Everyday English that tiny.en already hears well from espeak-ng (no domain gap): what the
# transcription tests and bench_transcribe.py decode, to compare decoders rather than models.
EVERYDAY_SENTENCES = (
    "Please call Stella and ask her to bring these things with her from the store.",
    "The museum opens its new exhibition about ancient Egypt next month.",
    "We will meet again next Tuesday afternoon at the library.",
    "She opened the window to let some fresh air into the room.",
    "The doctor told him to drink more water and get some rest.",
    "My grandmother keeps a small garden behind her house in the village.",
    "Our team finished the project two weeks ahead of schedule.",
    "The old bridge over the river was closed for repairs last summer.",
    "Reading books before bed helps many people fall asleep more easily.",
    "The weather today is cold and windy, with rain expected in the evening.",
    "The children played football in the park until the sun went down.",
    "Learning a new language takes patience and a lot of practice.",
)

# A small Spanish set (`--language es`), for trying several languages in one run (README,
# use case 2): the same kind of dictation, much less of it.
SPANISH_RECORDING_VOICES = {"train": ("es-m", "es-f"), "dev": ("es-f",), "test": ("es-m",)}
SPANISH_SENTENCES = {
    "train": (
        "La paciente es una mujer de 67 años con hipertensión y fibrilación auricular.",
        "Se inició metoprolol 25 miligramos una vez al día para el control de la frecuencia.",
        "Continuar atorvastatina 40 miligramos por la noche.",
        "El ecocardiograma mostró una fracción de eyección del 35%.",
        "Refiere ortopnea y disnea paroxística nocturna desde hace dos semanas.",
        "Se añadió espironolactona 25 miligramos al día.",
        "Se administró furosemida intravenosa con buena diuresis.",
        "El INR ha sido lábil con warfarina, por lo que se cambió a apixabán.",
    ),
    "dev": (
        "Es un hombre de 64 años con diabetes y enfermedad coronaria.",
        "Continuar clopidogrel 75 miligramos al día.",
        "Se suspendió la metformina antes de la tomografía.",
    ),
    "test": (
        "La paciente tiene fibrilación auricular e hipotiroidismo.",
        "Continuar apixabán 5 miligramos dos veces al día.",
        "Se aumentó la levotiroxina a 88 microgramos cada mañana.",
    ),
}
LANGUAGES = {"en": (SENTENCES, RECORDING_VOICES), "es": (SPANISH_SENTENCES, SPANISH_RECORDING_VOICES)}

# The domain vocabulary the demo is about. Every term in a dev or test sentence also occurs in
# training (tests/test_demo_data.py checks it), so fine-tuning has seen what it is scored on.
DOMAIN_TERMS = (
    "albuterol", "amlodipine", "apixaban", "atorvastatin", "carvedilol", "ceftriaxone",
    "clopidogrel", "empagliflozin", "furosemide", "gabapentin", "glargine",
    "hydrochlorothiazide", "levothyroxine", "lisinopril", "losartan", "metformin", "metoprolol",
    "ondansetron", "pantoprazole", "prednisone", "rosuvastatin", "sertraline", "spironolactone",
    "vancomycin", "warfarin",
    "atrial fibrillation", "bibasilar", "cellulitis", "consolidation", "creatinine", "dyspnea",
    "echocardiogram", "ejection fraction", "hyperlipidemia", "hypoglycemia", "hypothyroidism",
    "labile", "mitral regurgitation", "myalgias", "myocardial infarction", "nephrology",
    "neuropathy", "orthopnea", "troponin", "COPD", "INR", "A1C",
)

# espeak-ng reads some written forms the way no clinician says them ("COPD" as one word);
# the transcript keeps the written form, the synthesiser gets the spoken one.
SPOKEN_FORMS = {"COPD": "C O P D"}


def spoken(text: str) -> str:
    for written, said in SPOKEN_FORMS.items():
        text = re.sub(rf"\b{re.escape(written)}\b", said, text)
    return text


def plan_recordings(scale: float = 1.0, language: str = "en"
                    ) -> dict[str, list[tuple[str, Voice, tuple[str, ...]]]]:
    """split -> [(recording name, voice, sentences)], the whole dataset before synthesis.

    `scale` keeps that fraction of each split's sentences (at least one per recording) and of
    its recordings (at least one); sentences are dealt to recordings in contiguous blocks, so a
    smaller scale gives a prefix of the same material.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    all_sentences, recording_voices = LANGUAGES[language]
    plan = {}
    for split in SPLITS:
        voices = recording_voices[split]
        n_recordings = max(1, round(len(voices) * scale))
        sentences = all_sentences[split][: max(n_recordings, math.ceil(len(all_sentences[split]) * scale))]
        per_recording = np.array_split(np.arange(len(sentences)), n_recordings)
        plan[split] = [
            (f"{split}_{i + 1:02d}_{voices[i]}", VOICES[voices[i]],
             tuple(sentences[j] for j in indices))
            for i, indices in enumerate(per_recording)
        ]
    return plan


def _espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError(
            "espeak-ng not found: install it (Debian/Ubuntu: sudo apt-get install espeak-ng; "
            "macOS: brew install espeak-ng)"
        )
    return path


def synthesize(text: str, voice: Voice, workdir: Path) -> np.ndarray:
    """espeak-ng's reading of `text`, resampled to 16 kHz and trimmed to the speech.

    Returns: float32, shape (n_samples,), n_samples a multiple of SAMPLES_PER_MS.
    """
    # -w to a file rather than --stdout: the streamed header carries no data length.
    wav_path = workdir / "sentence.wav"
    subprocess.run(
        [_espeak_binary(), *voice.args(), "-w", str(wav_path), spoken(text)],
        check=True, capture_output=True, timeout=ESPEAK_TIMEOUT_S,
    )
    with wave.open(str(wav_path), "rb") as f:
        if (f.getnchannels(), f.getsampwidth(), f.getframerate()) != (1, 2, ESPEAK_RATE):
            raise RuntimeError(f"unexpected espeak-ng output format: {f.getparams()}")
        audio = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.float32) / 32768
    audio = _resample(audio, ESPEAK_RATE, SAMPLE_RATE)

    loud = np.flatnonzero(np.abs(audio) > 10 ** (SILENCE_DBFS / 20))
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r}")
    margin = TRIM_MARGIN_MS * SAMPLES_PER_MS
    start, end = max(0, loud[0] - margin), min(audio.size, loud[-1] + 1 + margin)
    speech = audio[start:end]
    # Pad to whole milliseconds so cue times in the SRT are exact, not rounded.
    return np.pad(speech, (0, -speech.size % SAMPLES_PER_MS))


def _resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling by truncating the spectrum (numpy only, deterministic).

    The input is zero-padded first so the FFT's circular wrap-around joins silence to silence.
    """
    pad = src_rate // 10  # 100 ms
    padded = np.pad(audio, (pad, pad))
    n_out = round(padded.size * dst_rate / src_rate)
    spectrum = np.fft.rfft(padded)[: n_out // 2 + 1]
    resampled = np.fft.irfft(spectrum, n_out) * (n_out / padded.size)
    out_pad = round(pad * dst_rate / src_rate)
    return resampled[out_pad: n_out - out_pad].astype(np.float32)


def _gap_samples(rng: random.Random) -> int:
    gap_ms = rng.randint(round(GAP_MIN_S * 1000), round(GAP_MAX_S * 1000))
    return gap_ms * SAMPLES_PER_MS


def render_recording(name: str, voice: Voice, sentences: tuple[str, ...], workdir: Path
                     ) -> tuple[np.ndarray, list[srt.Subtitle]]:
    """Concatenate the sentences with pauses. Returns (float32 audio, one cue per sentence)."""
    # Seeded by the name (str seeds are hashed with SHA-512, not Python's salted hash), so a
    # recording's pauses do not depend on which other recordings are generated.
    rng = random.Random(f"whisperft-demo/{name}")
    pieces = [np.zeros(round(LEAD_IN_S * SAMPLE_RATE), np.float32)]
    cursor = pieces[0].size
    cues = []
    for i, text in enumerate(sentences):
        if i:
            gap = _gap_samples(rng)
            pieces.append(np.zeros(gap, np.float32))
            cursor += gap
        speech = synthesize(text, voice, workdir)
        cues.append(srt.Subtitle(
            index=i + 1,
            start=timedelta(milliseconds=cursor // SAMPLES_PER_MS),
            end=timedelta(milliseconds=(cursor + speech.size) // SAMPLES_PER_MS),
            content=text,
        ))
        pieces.append(speech)
        cursor += speech.size
    pieces.append(np.zeros(round(TAIL_S * SAMPLE_RATE), np.float32))
    return np.concatenate(pieces), cues


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers never see half a file (whisperft's writer: temp file, fsync, rename)."""
    from whisperft.fileio import atomic_write

    with atomic_write(path) as f:
        f.write(data)


def wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit PCM mono WAV at SAMPLE_RATE, via the stdlib (so no header fields vary by library)."""
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:  # given a file object, wave leaves it open on close
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())
    return buf.getvalue()


def make_demo_data(out_dir: str | Path, *, scale: float = 1.0, language: str = "en") -> dict:
    """Generate the dataset under `out_dir` (see the module docstring for the layout).

    Returns {"out_dir", "seconds" (generation time), "splits": {split: {"audio_dir",
    "transcript_dir", "recordings": [(wav path, srt path)], "n_sentences", "duration_s"}}}.
    Files from an earlier run at another scale that this run does not produce are removed
    (only names of the form {split}_NN_*.wav/.srt, so nothing else in the folders is touched).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    plan = plan_recordings(scale, language)
    _espeak_binary()  # fail before creating any folder
    result = {"out_dir": str(out_dir), "splits": {}}
    with tempfile.TemporaryDirectory(prefix="whisperft-demo-") as tmp:
        for split, recordings in plan.items():
            audio_dir, transcript_dir = out_dir / f"{split}_audio", out_dir / f"{split}_transcripts"
            audio_dir.mkdir(parents=True, exist_ok=True)
            transcript_dir.mkdir(parents=True, exist_ok=True)
            info = {"audio_dir": str(audio_dir), "transcript_dir": str(transcript_dir),
                    "recordings": [], "n_sentences": 0, "duration_s": 0.0}
            for name, voice, sentences in recordings:
                audio, cues = render_recording(name, voice, sentences, Path(tmp))
                wav_path, srt_path = audio_dir / f"{name}.wav", transcript_dir / f"{name}.srt"
                _write_atomic(wav_path, wav_bytes(audio))
                _write_atomic(srt_path, srt.compose(cues, reindex=False).encode("utf-8"))
                info["recordings"].append((str(wav_path), str(srt_path)))
                info["n_sentences"] += len(cues)
                info["duration_s"] += audio.size / SAMPLE_RATE
            expected = {name for name, _, _ in recordings}
            for folder, suffix in ((audio_dir, ".wav"), (transcript_dir, ".srt")):
                for stale in folder.glob(f"{split}_[0-9][0-9]_*{suffix}"):
                    if stale.stem not in expected:
                        stale.unlink()
            result["splits"][split] = info
    result["seconds"] = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write {train,dev,test}_{audio,transcripts}/ into")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full dataset to generate, in (0, 1] (default 1.0)")
    parser.add_argument("--language", default="en", choices=sorted(LANGUAGES),
                        help="en: the demo's dictation (default); es: a small Spanish set")
    args = parser.parse_args(argv)
    try:
        result = make_demo_data(args.out_dir, scale=args.scale, language=args.language)
    except (RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, info in result["splits"].items():
        print(f"{split:5s}  {len(info['recordings'])} recordings  {info['n_sentences']:3d} sentences"
              f"  {info['duration_s']:6.1f} s  -> {info['audio_dir']}, {info['transcript_dir']}")
    print(f"generated in {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
