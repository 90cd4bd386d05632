"""Weight interpolation between the original model and its fine-tune (WiSE-FT, Wortsman et al.
2022): θ = α·θ_fine-tuned + (1−α)·θ_original. α = 0 is the original, α = 1 the fine-tune; in
between, most of the domain gain usually survives while much of what fine-tuning cost on
everything else comes back, for the price of one addition per weight.

`interpolate` writes one interpolated checkpoint: an openai-whisper `.pt` like training's
`best_model.pt` (a LoRA fine-tune's `best_model.pt` is already merged), which every loader and
export takes. With `--sweep` it transcribes a domain set and a general set at each α, draws
domain WER against general WER, recommends the α that keeps a share of the domain gain with the
least general loss (`recommend_alpha`) and writes that α's checkpoint.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write, write_json_atomic
from .options import opt

DEFAULT_ALPHAS = "0,0.25,0.5,0.75,1"
KEEP_GAIN = 0.9  # share of the fine-tune's domain gain the recommended α must keep
CHECKPOINT_DTYPES = ("float16", "float32")


@dataclass
class InterpolateOptions:
    base: str = opt(help="the original model (name, Hub id, folder, .pt or CTranslate2 folder)",
                    metavar="MODEL")
    model: str = opt(help="its fine-tune, e.g. training's best_model.pt (a LoRA run's is saved "
                          "merged)", metavar="FINE_TUNED")
    out: str = opt(help="the interpolated checkpoint (.pt); with --sweep a folder: sweep.json, "
                        "sweep.png, report.html and model.pt at the recommended alpha",
                   flags=("-o",), metavar="PATH")
    alpha: float | None = opt(None, "weight of the fine-tune: 0 = the original, 1 = the "
                                    "fine-tune (needed without --sweep)")
    sweep: bool = opt(False, "evaluate every --alphas value on --domain-audio and a general set, "
                             "draw domain WER against general WER and write the recommended one")
    alphas: str = opt(DEFAULT_ALPHAS, "with --sweep: the alphas to evaluate, comma-separated "
                                      "(0 and 1 are always added)")
    domain_audio: str | None = opt(None, "with --sweep: audio of your domain, reference "
                                         ".srt/.vtt/.txt beside each file (or in "
                                         "--domain-transcripts)", metavar="DIR")
    domain_transcripts: str | None = opt(None, "references of --domain-audio, if not beside it",
                                         metavar="DIR")
    general_audio: str | None = opt(None, "with --sweep: everyday speech the fine-tune should "
                                          "not forget, references beside it (default: a general "
                                          "set generated with espeak-ng into OUT, in "
                                          "--general-language)", metavar="DIR")
    general_transcripts: str | None = opt(None, "references of --general-audio, if not beside it",
                                          metavar="DIR")
    keep_gain: float = opt(KEEP_GAIN, "the recommended alpha keeps at least this share of the "
                                      "fine-tune's domain WER gain")
    language: str = opt("en", "language of the domain set (code or name): the transcription's "
                              "and the WER normaliser's")
    general_language: str | None = opt(None, "language of the general set: the generated one's "
                                             "(en, or es for a multilingual model), or that of "
                                             "--general-audio (default: en for the generated set, "
                                             "--language for yours)")
    beam_size: int = opt(1, "beam width of the sweep's transcriptions (1 = greedy, fastest)")
    dtype: str = opt("float16", "weights of the written checkpoint (float16 as training's "
                                "best_model.pt); the sweep scores them rounded the same way",
                     choices=CHECKPOINT_DTYPES)
    device: str = opt("auto", "cuda, mps, cpu, or auto")


# --------------------------------------------------------------------------------------------
# The architecture check and the interpolation


def _cheap_dims(spec: str) -> dict | None:
    """The model's openai-whisper `dims` where reading them is cheap (a .pt's header through a
    memory map, a Hugging Face folder's config.json); None where only loading the model tells."""
    path = Path(spec).expanduser()
    try:
        if path.is_file() and path.suffix in (".pt", ".pth"):
            import torch

            dims = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("dims")
            return dict(dims) if isinstance(dims, dict) else None
        if path.is_dir() and (path / "config.json").is_file() and not (path / "model.bin").is_file():
            from transformers import WhisperConfig

            from .conversions import openai_dims

            return openai_dims(WhisperConfig.from_pretrained(path))
    except Exception:  # unreadable here: load_model says why, in its own words
        return None
    return None


def check_same_architecture(base_dims: dict | None, model_dims: dict | None, base: str,
                            model: str) -> None:
    """UserError in one line when the two models' sizes differ (unknown dims pass)."""
    if base_dims is None or model_dims is None:
        return
    differ = [f"{k} {model_dims.get(k)} vs {base_dims.get(k)}"
              for k in sorted(set(base_dims) | set(model_dims)) if base_dims.get(k) != model_dims.get(k)]
    if differ:
        raise UserError(f"{model}: not the same architecture as {base} ({', '.join(differ)}); "
                        "interpolate a fine-tune with the model it was fine-tuned from")


def _dims(bundle) -> dict:
    from .conversions import base_model, openai_dims

    return openai_dims(base_model(bundle.model).config)


def load_pair(base: str, model: str, device: str = "cpu"):
    """(original, fine-tune) bundles, float32, after checking their sizes match (from the files'
    headers first where that is cheap, so a mismatch is told before anything slow)."""
    from .models import load_model

    check_same_architecture(_cheap_dims(base), _cheap_dims(model), base, model)
    base_bundle = load_model(base, device=device)
    model_bundle = load_model(model, device=device)
    check_same_architecture(_dims(base_bundle), _dims(model_bundle), base, model)
    return base_bundle, model_bundle


def parameters(bundle) -> dict:
    """name -> parameter (tied ones once) of the bundle's model."""
    return dict(bundle.model.named_parameters())


def set_interpolated(target: dict, base: dict, tuned: dict, alpha: float, dtype: str = "float32") -> None:
    """target = α·tuned + (1−α)·base, parameter by parameter, rounded through `dtype` (what a
    checkpoint of that dtype holds). `torch.lerp` is exact at both ends: α = 0 gives the original's
    weights and α = 1 the fine-tune's, bit for bit. `target` may be `tuned` itself."""
    import torch

    rounding = getattr(torch, dtype)
    with torch.no_grad():
        for name, out in target.items():
            mixed = torch.lerp(base[name].detach(), tuned[name].detach(), float(alpha))
            out.copy_(mixed.to(rounding))


def _check_alpha(alpha: float | None) -> float:
    if alpha is None:
        raise UserError("interpolate needs --alpha A (0 = the original, 1 = the fine-tune), or --sweep")
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"--alpha {alpha}: must be between 0 (the original) and 1 (the fine-tune)")
    return float(alpha)


def interpolate_models(base: str, model: str, alpha: float, out: str | Path, dtype: str = "float16",
                       device: str = "cpu") -> Path:
    """Write θ = α·θ_model + (1−α)·θ_base to `out` (an openai-whisper .pt); the fine-tune's
    tokenizer and generation config go with it."""
    import torch

    from .saving import save_checkpoint

    alpha = _check_alpha(alpha)
    base_bundle, tuned = load_pair(base, model, device)
    weights = parameters(tuned)
    set_interpolated(weights, parameters(base_bundle), weights, alpha, dtype)
    return save_checkpoint(tuned, out, dtype=getattr(torch, dtype))


# --------------------------------------------------------------------------------------------
# The sweep: measure, recommend, draw


@dataclass(frozen=True)
class SweepPoint:
    alpha: float
    domain_wer: float
    general_wer: float


def recommend_alpha(points: list[SweepPoint], keep_gain: float = KEEP_GAIN) -> dict:
    """The α that keeps at least `keep_gain` of the fine-tune's domain gain (WER at α = 0 minus
    WER at α = 1) with the least general WER; ties go to the lower domain WER, then the lower α.
    When the fine-tune gained nothing on the domain set, α = 0 (the original)."""
    by_alpha = {p.alpha: p for p in points}
    if 0.0 not in by_alpha or 1.0 not in by_alpha:
        raise ValueError("the sweep needs alpha 0 (the original) and alpha 1 (the fine-tune)")
    original, tuned = by_alpha[0.0], by_alpha[1.0]
    gain = original.domain_wer - tuned.domain_wer
    if gain <= 0:
        chosen, reason = original, "the fine-tune does not lower the domain WER: keep the original"
    else:
        # a hair of tolerance, so a point that keeps exactly the share is not lost to rounding
        eligible = [p for p in points if original.domain_wer - p.domain_wer >= keep_gain * gain - 1e-12]
        chosen = min(eligible, key=lambda p: (p.general_wer, p.domain_wer, p.alpha))
        reason = (f"keeps >= {keep_gain:.0%} of the domain gain with the least general WER")
    kept = (original.domain_wer - chosen.domain_wer) / gain if gain > 0 else None
    return {"alpha": chosen.alpha, "domain_wer": chosen.domain_wer, "general_wer": chosen.general_wer,
            "kept_gain": kept, "general_change": chosen.general_wer - original.general_wer,
            "keep_gain": keep_gain, "reason": reason}


def parse_alphas(text: str) -> list[float]:
    """Sorted distinct alphas of a comma-separated list, 0 and 1 included."""
    try:
        values = {float(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise UserError(f"--alphas {text!r}: not a comma-separated list of numbers") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise UserError(f"--alphas {text!r}: {bad[0]} is not between 0 and 1")
    return sorted(values | {0.0, 1.0})


@dataclass(frozen=True)
class EvalSet:
    """Audio files and the reference of each, for one side of the sweep."""

    name: str  # "domain" or "general"
    audio_dir: Path
    items: list[tuple[Path, Path]]  # (audio, reference)
    language: str  # the transcription's and the WER normaliser's


def find_eval_set(name: str, audio_dir: str | Path, transcript_dir: str | Path | None, flag: str,
                  language: str) -> EvalSet:
    """The audio under `audio_dir` that has a reference (same stem) in `transcript_dir` (default:
    beside it); UserError when the folder is missing or nothing pairs."""
    from .metrics import find_transcripts
    from .transcribe import find_audio

    audio_dir = Path(audio_dir).expanduser()
    if not audio_dir.is_dir():
        raise UserError(f"{flag} {audio_dir}: no such folder")
    refs = find_transcripts(transcript_dir or audio_dir, f"{flag.replace('audio', 'transcripts')}"
                            if transcript_dir else flag)
    items = [(a, refs[a.stem]) for a in find_audio(audio_dir) if a.stem in refs]
    if not items:
        raise UserError(f"{flag} {audio_dir}: no audio file has a reference transcript of the same name "
                        f"in {transcript_dir or audio_dir}")
    return EvalSet(name, audio_dir, items, language)


def _transcribe_and_score(bundle, data: EvalSet, opts: InterpolateOptions, save_dir: Path) -> float:
    """Weighted WER of the bundle's transcripts of `data` (written as SRTs to `save_dir`)."""
    from .decoding import TorchTranscriber
    from .metrics import score
    from .subtitles import read_text
    from .transcription import TranscribeOptions
    from .writers import write_transcript

    import torch

    # the temperature fallback samples: seeded, so every alpha and every run decode alike
    torch.manual_seed(0)
    runner = TorchTranscriber(bundle, TranscribeOptions(language=data.language, beam_size=opts.beam_size))
    pairs = []
    # files finish in any order (a short one overtakes a long one): each result carries its key
    for i, result in runner.run((i, runner.open_audio(audio)) for i, (audio, _) in enumerate(data.items)):
        if isinstance(result, Exception):
            raise result
        audio, ref = data.items[i]
        write_transcript(save_dir / f"{audio.stem}.srt", result)
        pairs.append((audio.stem, read_text(ref), result.text))
    return score(sorted(pairs), metric="WER", language=data.language).weighted_average() or 0.0


def _check_english_only(dims: dict | None, base: str, language: str) -> None:
    """UserError when an English-only model would be scored in another language."""
    from .tokenizer import ENGLISH_ONLY_VOCAB

    english_only = dims is not None and dims.get("n_vocab", ENGLISH_ONLY_VOCAB + 1) <= ENGLISH_ONLY_VOCAB
    if english_only and language != "en":
        raise UserError(f"--general-language {language}: {base} is an English-only model, so speech in "
                        "another language says nothing about what it kept; use en")


def _alpha_dir(out: Path, alpha: float) -> Path:
    return out / "transcripts" / f"alpha_{alpha:.3f}".rstrip("0").rstrip(".")


def run_sweep(opts: InterpolateOptions) -> dict:
    """The sweep (see the module docstring); returns what sweep.json holds."""
    import torch
    from tqdm import tqdm

    from .devices import choose_device
    from .general_set import general_set_for, make_general_set
    from .tokens import language_code
    from .saving import save_checkpoint

    if opts.domain_audio is None:
        raise UserError("--sweep needs --domain-audio DIR (your domain's audio, references beside it)")
    if not 0.0 < opts.keep_gain <= 1.0:
        raise UserError(f"--keep-gain {opts.keep_gain}: must be above 0 and at most 1")
    alphas = parse_alphas(opts.alphas)
    out = Path(opts.out)
    if out.is_file():
        raise UserError(f"--out {out}: with --sweep this is a folder, and a file is there")
    if opts.general_audio is None:
        general_language = general_set_for(opts.general_language)[0]
    else:
        general_language = language_code(opts.general_language, language_code(opts.language, "en"))
    sets = [find_eval_set("domain", opts.domain_audio, opts.domain_transcripts, "--domain-audio", opts.language)]
    if opts.general_audio is not None:
        sets.append(find_eval_set("general", opts.general_audio, opts.general_transcripts, "--general-audio",
                                  general_language))
    _check_english_only(_cheap_dims(opts.base), opts.base, general_language)

    base_bundle, tuned = load_pair(opts.base, opts.model, choose_device(opts.device))
    _check_english_only(_dims(base_bundle), opts.base, general_language)
    if opts.general_audio is None:
        folder = out / "general_set" if general_language == "en" else out / f"general_set_{general_language}"
        print(f"no --general-audio: generating the general {general_language} set into {folder}", flush=True)
        sets.append(find_eval_set("general", make_general_set(folder, general_language), None, "--general-audio",
                                  general_language))
    base, fine = parameters(base_bundle), {k: v.detach().clone() for k, v in parameters(tuned).items()}
    work = parameters(tuned)
    points = []
    with tqdm(total=len(alphas) * len(sets), desc="sweep", unit="set", file=sys.stderr, disable=None) as bar:
        for alpha in alphas:
            set_interpolated(work, base, fine, alpha, opts.dtype)
            wers = {}
            for data in sets:
                bar.set_postfix_str(f"alpha {alpha:g}, {data.name}")
                wers[data.name] = _transcribe_and_score(tuned, data, opts, _alpha_dir(out, alpha) / data.name)
                bar.update(1)
            points.append(SweepPoint(alpha, wers["domain"], wers["general"]))
            tqdm.write(f"alpha {alpha:g}: domain WER {wers['domain']:.2%}, general WER "
                       f"{wers['general']:.2%}", file=sys.stderr)
    best = recommend_alpha(points, opts.keep_gain)
    set_interpolated(work, base, fine, best["alpha"], opts.dtype)
    save_checkpoint(tuned, out / "model.pt", dtype=getattr(torch, opts.dtype))
    return {"base": opts.base, "model": opts.model, "dtype": opts.dtype,
            "domain_audio": str(sets[0].audio_dir), "general_audio": str(sets[1].audio_dir),
            "general_language": general_language,
            "points": [vars(p) for p in points], "recommended": best,
            "checkpoint": str(out / "model.pt")}


def _write_outputs(sweep: dict, opts: InterpolateOptions) -> None:
    """sweep.json, sweep.png, and report.html: the domain set's evaluation, the original against
    the recommended α, with the sweep's section."""
    from .metrics import EvaluateOptions, evaluate
    from .report import interpolation_figure, write_html_report

    out = Path(opts.out)
    write_json_atomic(out / "sweep.json", sweep)
    fig = interpolation_figure(sweep)
    with atomic_write(out / "sweep.png") as fh:
        fig.savefig(fh, format="png", dpi=100)
    refs = opts.domain_transcripts or opts.domain_audio
    evaluation = out / "evaluation.json"
    evaluate(EvaluateOptions(recognized_dir=str(_alpha_dir(out, sweep["recommended"]["alpha"]) / "domain"),
                             transcript_dir=str(refs), compare=str(_alpha_dir(out, 0.0) / "domain"),
                             language=opts.language, json=str(evaluation)))
    results = json.loads(evaluation.read_text(encoding="utf-8"))
    results["title"] = (f"whisperft interpolation: domain set, original (before) and alpha "
                        f"{sweep['recommended']['alpha']:g} (after)")
    results["interpolation"] = sweep
    write_html_report(results, out / "report.html")


def summary_lines(sweep: dict) -> list[str]:
    """The sweep as printed: one line per α, then the recommendation."""
    lines = [f"{'alpha':>6}  {'domain WER':>10}  {'general WER':>11}"]
    lines += [f"{p['alpha']:>6g}  {p['domain_wer']:>10.2%}  {p['general_wer']:>11.2%}" for p in sweep["points"]]
    best = sweep["recommended"]
    kept = "n/a" if best["kept_gain"] is None else f"{best['kept_gain']:.0%}"
    lines.append(f"recommended alpha {best['alpha']:g}: domain WER {best['domain_wer']:.2%}, general WER "
                 f"{best['general_wer']:.2%} ({best['general_change'] * 100:+.2f} points against the "
                 f"original), {kept} of the domain gain kept; {best['reason']}")
    return lines


def interpolate(opts: InterpolateOptions) -> int:
    """The `interpolate` command."""
    if opts.dtype not in CHECKPOINT_DTYPES:
        raise UserError(f"--dtype {opts.dtype}: choose {' or '.join(CHECKPOINT_DTYPES)}")
    if not opts.sweep:
        from .devices import choose_device

        path = interpolate_models(opts.base, opts.model, opts.alpha, opts.out, opts.dtype,
                                  choose_device(opts.device))
        print(f"wrote alpha {opts.alpha:g} of {opts.model} over {opts.base} to {path}")
        return 0
    if opts.alpha is not None:
        raise UserError("--alpha and --sweep: the sweep picks the alpha; give one or the other")
    sweep = run_sweep(opts)
    _write_outputs(sweep, opts)
    print("\n".join(summary_lines(sweep)))
    out = Path(opts.out)
    print(f"wrote {out / 'model.pt'}, {out / 'sweep.json'}, {out / 'sweep.png'}, {out / 'report.html'}")
    return 0
