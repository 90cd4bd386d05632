"""Small general evaluation sets, generated on the user's machine from text and espeak-ng
voices: what a fine-tune should not forget, for users with no general data of their own
(`interpolate --sweep` without `--general-audio`). English, and Spanish for multilingual models
(`--general-language es`): a fine-tune on one language can also cost the others.

The sentences were written for whisperft (no third-party text, so no licence to carry) and are
everyday speech: errands, weather, travel, work. The English ones share no sentence with the
demo's domain set or its everyday test sentences, and their voices (Scottish, New York,
Caribbean, Lancaster and West Midlands English) are none of the demo's, so a fine-tune on the
demo data is scored here on sentences and speakers it never trained on. The Spanish set is read
by espeak-ng's Spain and Latin American voices. The synthesis is the demo generator's
(demo/make_data.py), so every set is made the same deterministic way.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class GeneralSet:
    voices: dict  # recording key -> (espeak-ng voice, words per minute, pitch 0-99)
    sentences: tuple  # one group of sentences per voice, in the voices' order


_ENGLISH_VOICES = {
    "scot-m": ("en-gb-scotland", 160, 45),
    "nyc-m": ("en-us-nyc", 165, 52),
    "car-f": ("en-029+f4", 155, 62),
    "lanc-m": ("en-gb-x-gbclan", 150, 40),
    "wmid-f": ("en-gb-x-gbcwmd+f2", 158, 58),
}

_ENGLISH_SENTENCES = (
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

_SPANISH_VOICES = {
    "es-m": ("es", 155, 45),
    "es-f": ("es+f2", 150, 60),
    "lat-m": ("es-419", 160, 50),
    "lat-f": ("es-419+f4", 155, 62),
    "es-m3": ("es+m3", 145, 40),
}

_SPANISH_SENTENCES = (
    # es-m
    ("Esta mañana he perdido el autobús y he llegado tarde al trabajo.",
     "¿Puedes comprar pan y leche cuando vuelvas a casa?",
     "El tren hacia la costa sale cada hora desde el andén cuatro.",
     "Pasamos el fin de semana pintando la cocina de color verde.",
     "Mi hermano se olvidó las llaves y tuvo que esperar en la calle."),
    # es-f
    ("La cafetería de la esquina tiene los mejores bizcochos del barrio.",
     "Había tanto tráfico que el taxi tardó casi una hora.",
     "Mi vecina está aprendiendo a tocar el piano desde el invierno pasado.",
     "Vamos a reservar las entradas esta noche antes de que se agoten.",
     "El ascensor no funciona, así que todos tienen que subir por las escaleras."),
    # lat-m
    ("El mercado se llena los sábados cuando los campesinos traen fruta fresca.",
     "Ella le escribió una carta larga a su prima que vive en otra ciudad.",
     "El paseo en barco alrededor de la isla fue tranquilo y el agua estaba muy clara.",
     "No te olvides de regar las plantas mientras estamos de vacaciones.",
     "La maestra nos pidió leer dos capítulos antes de la próxima clase."),
    # lat-f
    ("El partido de fútbol se suspendió porque el campo estaba lleno de agua.",
     "Por lo general saco a pasear al perro antes del desayuno.",
     "La panadería nueva vende pan que todavía está caliente por la tarde.",
     "Están construyendo un estacionamiento más grande al lado de la estación.",
     "Mi tío arregló la bicicleta vieja y se la regaló a su hija."),
    # es-m3
    ("La reunión se ha cambiado al jueves porque el director está de viaje.",
     "Pedimos una pizza grande y vimos una película en el sofá.",
     "La dependienta me ayudó a encontrar un abrigo para el invierno.",
     "Tardamos tres horas en llegar a la playa el domingo pasado.",
     "Por favor, apaga las luces y cierra la puerta cuando salgas."),
)

# language code (whisperft.tokens.language_code's) -> its set
GENERAL_SETS = {"en": GeneralSet(_ENGLISH_VOICES, _ENGLISH_SENTENCES),
                "es": GeneralSet(_SPANISH_VOICES, _SPANISH_SENTENCES)}


def general_set_for(language: str | None, flag: str = "--general-language") -> tuple[str, GeneralSet]:
    """(language code, its set); UserError in one line for a language with no set."""
    from .tokens import language_code

    code = language_code(language, "en")
    if code not in GENERAL_SETS:
        raise UserError(f"{flag} {language}: no generated general set in that language "
                        f"(there are: {', '.join(GENERAL_SETS)}); give --general-audio instead")
    return code, GENERAL_SETS[code]


def load_generator():
    """demo/make_data.py as a module (the demo's and the general set's speech synthesis)."""
    path = REPO / "demo" / "make_data.py"
    if not path.is_file():
        raise UserError(f"{path}: the demo data generator is missing (run the demo from a clone "
                        "of the repository)")
    spec = importlib.util.spec_from_file_location("whisperft_demo_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_general_set(out_dir: str | Path, language: str = "en") -> Path:
    """Write the set of `language` into `out_dir` (one WAV per voice, its .srt beside it; the
    same bytes on every run) and return the folder. Needs espeak-ng and the repository's demo/
    folder."""
    from .fileio import atomic_write

    code, general = general_set_for(language)
    make_data = load_generator()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="whisperft-general-") as tmp:
            for (key, (voice, wpm, pitch)), sentences in zip(general.voices.items(), general.sentences):
                name = f"general_{key}" if code == "en" else f"general_{code}_{key}"
                audio, cues = make_data.render_recording(name, make_data.Voice(key, voice, wpm, pitch),
                                                         sentences, Path(tmp))
                with atomic_write(out_dir / f"{name}.wav") as fh:
                    fh.write(make_data.wav_bytes(audio))
                with atomic_write(out_dir / f"{name}.srt") as fh:
                    fh.write(make_data.srt.compose(cues, reindex=False).encode("utf-8"))
    except RuntimeError as exc:  # espeak-ng missing or failing: the generator's own words
        raise UserError(f"general set: {exc}") from None
    return out_dir
