"""Generate recordings with subtitles that carry known faults, to test `whisperft check-data`
and the repairs of `create_data.py` (`--fix-timing`, `--max-cue-wer`).

    python demo/make_faulty_data.py OUT_DIR [--files 8] [--domain]

writes OUT_DIR/audio/NAME.wav, OUT_DIR/subtitles/NAME.srt (the faulty subtitles),
OUT_DIR/clean/NAME.srt (the true ones) and OUT_DIR/truth.json, which says for each file what
was injected:

    offset   seconds added to every cue time (the whole file shifted, as for a video intro)
    rate     cue times multiplied by it (a drift: 1.04 is 25 fps subtitles on 24 fps audio)
    wrong    1-based indices of cues whose text was replaced by a sentence not said there
             (by default one said nowhere in the set; `wrong_texts` may give the set's own)
    silence  indices of cues placed over silence (text with no speech under it)
    past_end indices of cues that run past the end of the audio

Faults are dealt so that every kind occurs and the first file stays clean. Speech comes from
demo/make_data.py (espeak-ng, exact cue times); everything is seeded, so a run is repeatable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import srt

_HERE = Path(__file__).resolve().parent


def _make_data():
    spec = importlib.util.spec_from_file_location("whisperft_demo_data", _HERE / "make_data.py")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


# Everyday English written for this set (no sentence is shared with the demo's data): what
# tiny.en hears well, so a cue that disagrees with it is the cue's fault, not the model's.
SENTENCES = (
    "The bakery on the corner sells fresh bread every morning.",
    "He forgot his umbrella on the train again this week.",
    "Our neighbours are painting their fence a bright shade of blue.",
    "The concert was cancelled because the singer had a cold.",
    "Please remember to switch off the lights when you leave.",
    "She has been learning to play the piano for three years.",
    "The library will be closed on Monday for the holiday.",
    "My brother drives a small red car to work.",
    "We watched the sunset from the top of the hill.",
    "The train to the city leaves every twenty minutes.",
    "They planted apple trees along the edge of the field.",
    "The children built a sandcastle near the water.",
    "I usually drink a cup of tea before breakfast.",
    "The new restaurant serves food from many different countries.",
    "He repaired the broken chair with glue and a few nails.",
    "The river flooded the road after the heavy rain.",
    "She wrote a long letter to her friend in Canada.",
    "The shop assistant helped me find a warm winter coat.",
    "Our flight was delayed by two hours because of fog.",
    "The students listened carefully to the history lesson.",
    "A small dog was barking at the postman outside.",
    "They spent the whole weekend cleaning out the garage.",
    "The museum has a famous collection of old maps.",
    "He likes to go running in the park before work.",
    "The soup needs a little more salt and pepper.",
    "We bought tickets for the football match on Saturday.",
    "The farmer sold eggs and vegetables at the market.",
    "My sister is studying to become a nurse.",
    "The wind blew the leaves all over the garden.",
    "He read the newspaper while waiting for the bus.",
    "The hotel room had a beautiful view of the sea.",
    "They celebrated her birthday with a big chocolate cake.",
    "The teacher asked everyone to open their books.",
    "The bridge is painted white and has three arches.",
    "She found an old photograph inside the drawer.",
    "The meeting will start at nine o'clock sharp.",
    "I left my keys on the kitchen table last night.",
    "The cat likes to sleep in the warm sunshine.",
    "Our town has a market in the square every Friday.",
    "He carried the heavy boxes up the stairs.",
    "The phone rang just as we sat down to dinner.",
    "They are planning a trip to the mountains next summer.",
    "The garden is full of roses in the month of June.",
    "She always takes the stairs instead of the lift.",
    "The plumber came to fix the leaking pipe.",
    "We should book a table before the restaurant gets busy.",
    "The old clock in the hall stopped working years ago.",
    "He borrowed a ladder to clean the windows.",
    "The baby fell asleep in the back of the car.",
    "The snow made the streets quiet and white.",
    "My parents met at a dance many years ago.",
    "The office is on the fourth floor of the building.",
    "She packed sandwiches and fruit for the picnic.",
    "The bus driver waited for the old man to sit down.",
    "The pizza was cold by the time it arrived.",
    "They painted the kitchen walls a pale yellow.",
    "He keeps his bicycle in the shed behind the house.",
    "The film was so long that we missed the last bus.",
    "The nurse took his temperature and wrote it down.",
    "We need to buy milk, bread and some cheese.",
    "The lake was calm and the water was very clear.",
    "Her grandfather tells wonderful stories about the sea.",
    "The guests arrived early and helped set the table.",
    "The road through the forest is narrow and winding.",
)

# Texts that replace cues ("wrong text"): said nowhere in the set.
WRONG_TEXTS = (
    "Translator's note: this scene was cut from the broadcast version.",
    "The committee approved the budget for the coming year.",
    "Thunderstorms are expected across the northern region tonight.",
    "Press the green button to confirm your selection.",
    "The spacecraft entered orbit around the distant planet.",
    "Several paintings were stolen from the gallery overnight.",
    "The recipe calls for two eggs and a cup of flour.",
    "Engineers inspected the tunnel before it reopened.",
    "The orchestra rehearsed the symphony for many weeks.",
    "A rare bird was spotted near the lighthouse.",
    "Shares in the company rose sharply after the announcement.",
    "The marathon runners crossed the finish line in the rain.",
    "Volunteers collected rubbish from the beach on Sunday.",
    "The detective found a clue hidden under the carpet.",
    "Our internet connection has been slow all afternoon.",
    "The volcano erupted for the first time in a century.",
)

VOICES = ("us-m", "gb-m", "us-f", "rp-m", "gb-f")
OFFSETS = (0.5, -1.0, 2.0, -3.0, 1.5, -0.5, 3.0, -2.0)  # seconds, dealt to the shifted files
DRIFT_RATES = (1.04, 0.96)
WRONG_SHARE = 0.1  # of the cues
SILENCE_PAUSE_S = 4.0  # the pause a silence cue is placed in
SILENCE_CUE_S = 2.0


def _render(name: str, voice, sentences, workdir: Path, silence_at: int | None, lead_in: float):
    """(audio, true cues) of the sentences read with pauses after `lead_in` seconds of silence;
    with `silence_at`, a pause of SILENCE_PAUSE_S before that sentence and a cue over its
    middle (returned separately)."""
    md = _make_data()
    rng = random.Random(f"whisperft-faulty/{name}")
    rate = md.SAMPLE_RATE
    pieces = [np.zeros(round(lead_in * rate), np.float32)]
    cursor = pieces[0].size
    cues, silence_span = [], None
    for i, text in enumerate(sentences):
        gap = rng.randint(round(md.GAP_MIN_S * 1000), round(md.GAP_MAX_S * 1000)) * md.SAMPLES_PER_MS if i else 0
        if i == silence_at:
            pause = round(SILENCE_PAUSE_S * rate)
            start = cursor + gap + (pause - round(SILENCE_CUE_S * rate)) // 2
            silence_span = (start / rate, start / rate + SILENCE_CUE_S)
            gap += pause
        pieces.append(np.zeros(gap, np.float32))
        cursor += gap
        speech = md.synthesize(text, md.VOICES[voice], workdir)
        cues.append((cursor / rate, (cursor + speech.size) / rate, text))
        pieces.append(speech)
        cursor += speech.size
    pieces.append(np.zeros(round(md.TAIL_S * rate), np.float32))
    return np.concatenate(pieces), cues, silence_span


def _plan(n_files: int) -> list[dict]:
    """Which faults each file gets: file 0 clean; timing faults dealt round the rest."""
    plans = []
    for i in range(n_files):
        plan = {"offset": 0.0, "rate": 1.0, "silence": False, "past_end": False, "wrong": i > 0}
        if i == 0:
            plans.append(plan)
            continue
        kind = (i - 1) % 4
        if kind in (0, 1, 3):
            plan["offset"] = OFFSETS[(i - 1) % len(OFFSETS)]
        if kind == 2 or i == 3:
            plan["rate"] = DRIFT_RATES[(i // 4) % len(DRIFT_RATES)]
        plan["silence"] = i % 3 == 1
        plan["past_end"] = i == n_files - 1
        plans.append(plan)
    return plans


def _to_srt(cues) -> str:
    return srt.compose([srt.Subtitle(k + 1, timedelta(seconds=round(s, 3)), timedelta(seconds=round(e, 3)), t)
                        for k, (s, e, t) in enumerate(cues)])


def _draw(pool: list[str], replaced: str = "") -> str:
    """A wrong text from the pool, never the text it replaces (the pool may be the set's own
    sentences: text from another moment)."""
    for k in range(len(pool) - 1, -1, -1):
        if pool[k] != replaced:
            return pool.pop(k)
    raise ValueError("the pool of wrong texts ran out")


def make_faulty_set(out_dir: str | Path, *, n_files: int = 8, per_file: int = 10,
                    sentences: tuple[str, ...] = SENTENCES, wrong_texts: tuple[str, ...] = WRONG_TEXTS,
                    voices: tuple[str, ...] = VOICES, seed: str = "whisperft-faulty",
                    clean: bool = False) -> dict:
    """Write the set (see the module docstring); returns the truth. `clean` injects nothing."""
    md = _make_data()
    out = Path(out_dir)
    rng = random.Random(seed)
    plans = _plan(n_files) if not clean else [
        {"offset": 0.0, "rate": 1.0, "silence": False, "past_end": False, "wrong": False}] * n_files
    n_cues = n_files * per_file
    wrong_pool = list(wrong_texts)
    rng.shuffle(wrong_pool)
    faulty_files = [i for i, p in enumerate(plans) if p["wrong"]]
    n_wrong = 0 if clean else max(1, round(WRONG_SHARE * n_cues))
    wrong_slots = set(rng.sample([(i, k) for i in faulty_files for k in range(per_file)], n_wrong)) if n_wrong else set()
    truth = {"files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for i, plan in enumerate(plans):
            name = f"rec{i + 1:02d}_{voices[i % len(voices)]}"
            chosen = tuple(sentences[(i * per_file + k) % len(sentences)] for k in range(per_file))
            silence_at = per_file // 2 if plan["silence"] else None
            # cues shifted early must not fall before 0 s (no subtitle file can say that)
            lead_in = md.LEAD_IN_S + max(0.0, -plan["offset"])
            audio, cues, silence_span = _render(name, voices[i % len(voices)], chosen, Path(tmp), silence_at, lead_in)
            duration = audio.size / md.SAMPLE_RATE
            faulty = [(s, e, _draw(wrong_pool, t) if (i, k) in wrong_slots else t) for k, (s, e, t) in enumerate(cues)]
            wrong = [k + 1 for k in range(per_file) if (i, k) in wrong_slots]
            silence = []
            if silence_span is not None:
                faulty.insert(silence_at, (*silence_span, _draw(wrong_pool)))
                wrong = [k + 1 if k > silence_at else k for k in wrong]
                silence = [silence_at + 1]
            past_end = []
            if plan["past_end"]:
                faulty.append((duration + 0.5, duration + 3.0, _draw(wrong_pool)))
                past_end = [len(faulty)]
            timed = [(plan["rate"] * s + plan["offset"], plan["rate"] * e + plan["offset"], t) for s, e, t in faulty]
            for folder, content in (("subtitles", _to_srt(timed)), ("clean", _to_srt(cues))):
                path = out / folder / f"{name}.srt"
                path.parent.mkdir(parents=True, exist_ok=True)
                md._write_atomic(path, content.encode("utf-8"))
            wav = out / "audio" / f"{name}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            md._write_atomic(wav, md.wav_bytes(audio))
            truth["files"][name] = {"offset": plan["offset"], "rate": plan["rate"], "wrong": wrong,
                                    "silence": silence, "past_end": past_end, "cues": len(timed),
                                    "duration": round(duration, 3)}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--per-file", type=int, default=10)
    parser.add_argument("--clean", action="store_true", help="inject nothing")
    args = parser.parse_args()
    truth = make_faulty_set(args.out_dir, n_files=args.files, per_file=args.per_file, clean=args.clean)
    files = truth["files"].values()
    print(f"wrote {len(truth['files'])} recordings to {args.out_dir}: "
          f"{sum(f['offset'] != 0 for f in files)} shifted, {sum(f['rate'] != 1 for f in files)} drifting, "
          f"{sum(len(f['wrong']) for f in files)} wrong-text cues, {sum(len(f['silence']) for f in files)} "
          f"over silence, {sum(len(f['past_end']) for f in files)} past the end (truth.json)")


if __name__ == "__main__":
    main()
