"""A small general-English evaluation set, generated on the user's machine from text and
espeak-ng voices: what a fine-tune should not forget, for users with no general data of their
own (`interpolate --sweep` without `--general-audio`).

The sentences were written for whisperft (no third-party text, so no licence to carry) and are
everyday English: errands, weather, travel, work, numbers said as people say them. They share
no sentence with the demo's domain set or its everyday test sentences, and the voices (Scottish,
New York, Caribbean, Lancaster and West Midlands English) are none of the demo's, so a fine-tune
on the demo data is scored here on sentences and speakers it never trained on. The synthesis is
the demo generator's (demo/make_data.py), so both sets are made the same deterministic way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import UserError

# recording key -> (espeak-ng voice, words per minute, pitch 0-99)
GENERAL_VOICES = {
    "scot-m": ("en-gb-scotland", 160, 45),
    "nyc-m": ("en-us-nyc", 165, 52),
    "car-f": ("en-029+f4", 155, 62),
    "lanc-m": ("en-gb-x-gbclan", 150, 40),
    "wmid-f": ("en-gb-x-gbcwmd+f2", 158, 58),
}

GENERAL_SENTENCES = (
    # scot-m
    ("I left my umbrella on the bus this morning, so I got soaked on the way to work.",
     "Could you pick up some bread and a carton of milk on your way home?",
     "The train to the coast leaves every hour from platform four.",
     "We spent the whole weekend painting the kitchen a pale shade of green.",
     "He forgot his keys again and had to wait outside until his sister came back."),
    # nyc-m
    ("The coffee shop on the corner has the best muffins in the neighborhood.",
     "Traffic was so heavy that the taxi ride took almost an hour.",
     "My neighbor has been learning to play the piano since last winter.",
     "Let's book the tickets tonight before the cheap seats are gone.",
     "The elevator is out of order, so everyone has to take the stairs."),
    # car-f
    ("The market is busy on Saturday mornings when the farmers bring fresh fruit.",
     "She wrote a long letter to her cousin who moved to Canada last year.",
     "The boat trip around the island was calm and the water was very clear.",
     "Remember to water the plants while we are away on holiday.",
     "Our teacher asked us to read two chapters before the next class."),
    # lanc-m
    ("The football match was cancelled because the pitch was covered in snow.",
     "I usually walk the dog along the canal before breakfast.",
     "The new bakery in town sells bread that is still warm in the afternoon.",
     "They are building a bigger car park next to the railway station.",
     "My brother fixed the old bicycle and gave it to his daughter."),
    # wmid-f
    ("The meeting has been moved to Thursday because the manager is travelling.",
     "We ordered a large pizza and watched a film on the sofa.",
     "The shop assistant helped me find a warm coat for the winter.",
     "It took us three hours to drive to the seaside last Sunday.",
     "Please switch off the lights and close the door when you leave."),
)


def make_general_set(out_dir: str | Path) -> Path:
    """Write the set into `out_dir` (one WAV per voice, its .srt beside it; the same bytes on
    every run) and return the folder. Needs espeak-ng and the repository's demo/ folder."""
    from .demo import load_generator
    from .fileio import atomic_write

    make_data = load_generator()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="whisperft-general-") as tmp:
            for (key, (voice, wpm, pitch)), sentences in zip(GENERAL_VOICES.items(), GENERAL_SENTENCES):
                name = f"general_{key}"
                audio, cues = make_data.render_recording(name, make_data.Voice(key, voice, wpm, pitch),
                                                         sentences, Path(tmp))
                with atomic_write(out_dir / f"{name}.wav") as fh:
                    fh.write(make_data.wav_bytes(audio))
                with atomic_write(out_dir / f"{name}.srt") as fh:
                    fh.write(make_data.srt.compose(cues, reindex=False).encode("utf-8"))
    except RuntimeError as exc:  # espeak-ng missing or failing: the generator's own words
        raise UserError(f"general set: {exc}") from None
    return out_dir
