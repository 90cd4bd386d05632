"""The evaluation as one self-contained HTML page: a summary table (before, after and the
change), a bar chart of each file's error rate, a histogram of timestamp start errors, the
words written on non-speech probes, and each file's reference and recognised text with the
substitutions, deletions and insertions marked.

The page needs nothing outside itself: charts are PNGs drawn with matplotlib and inlined as
base64 `data:` URLs, the styling is one <style> block, there is no script and no font or
stylesheet to fetch, so it opens the same offline, from an e-mail attachment or a CI artefact.

`results` is what the evaluate command collects:

    {"metric": "WER", "normalizer": "whisper",
     "runs": {"after": RUN, "before": RUN}}           # "before" only when two runs are compared
    RUN = {"summary": {"wer_unweighted", "wer_weighted",
                       "start_error": {"median", "p90", "count"},
                       "end_error": {"median", "p90", "count"},
                       "insertion_rate", "repeated_5gram_rate", "longest_repeated_run",
                       "words_in_silences", "probe_words"},
           "files": [{"name", "reference", "hypothesis", "rate", "substitutions", "deletions",
                      "insertions", "reference_words", "start_errors": [...], "end_errors": [...],
                      "insertion_rate", "repeated_5gram_rate", "longest_repeated_run",
                      "words_in_silences"}],
           "probes": [{"name", "words", "text"}]}

Rates are fractions (0.043 is shown as 4.30%), timestamp errors are in seconds. Any value may
be null or absent (untimed transcripts have no timestamp errors, a run may have no probes):
the page shows "—" there.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path

from .fileio import atomic_write_text

MISSING = "—"
RUN_KEYS = ("before", "after")
COLORS = {"before": "#dd8452", "after": "#4c72b0"}

# Words are matched lower-cased with everything but letters and digits removed, so "Apixaban,"
# matches "apixaban"; the page shows the words as written.
_NOT_WORD = re.compile(r"[\W_]+")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: #1f2933; background: #fff; margin: 0 auto; padding: 1.5rem 2rem 3rem;
       max-width: 1200px; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .6rem; border-bottom: 1px solid #d9e2ec;
     padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
h4 { font-size: .95rem; margin: .2rem 0 .3rem; }
.meta, .note, .muted { color: #616e7c; }
.meta { margin: .15rem 0; }
.note { font-size: .8rem; font-weight: normal; }
table { border-collapse: collapse; margin: .4rem 0; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #e4e7eb; text-align: left;
         vertical-align: top; }
thead th { background: #f5f7fa; border-bottom: 2px solid #cbd2d9; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.better { color: #1b7a3e; font-weight: 600; }
.worse { color: #c62828; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.charts figure { margin: 0; flex: 1 1 460px; }
.charts img { max-width: 100%; height: auto; border: 1px solid #e4e7eb; }
figcaption { font-size: .85rem; color: #616e7c; }
td.probe-bad { background: #fde2e2; color: #9b1c1c; font-weight: 700; }
td.probe-ok { color: #1b7a3e; }
td.probe-text { max-width: 28rem; font-size: .9rem; }
.legend span.swatch { margin-right: 1.2rem; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 1rem; }
.run { border: 1px solid #e4e7eb; border-radius: 6px; padding: .5rem .8rem; background: #fbfcfd; }
.label { font-size: .75rem; text-transform: uppercase; letter-spacing: .05em; color: #616e7c;
         margin-top: .4rem; }
p.text { margin: .1rem 0 .4rem; }
.sub { background: #fde68a; border-bottom: 2px solid #d97706; }
.del { background: #fecaca; color: #991b1b; text-decoration: line-through; }
.ins { background: #bfdbfe; color: #1e3a8a; text-decoration: underline; }
.sub, .del, .ins { padding: 0 .15em; border-radius: 3px; }
table.filestats { font-size: .9rem; }
"""

# label ("{metric}" filled in), path in a run's "summary", kind, lower is better (None: neither),
# what it measures
SUMMARY_ROWS = (
    ("{metric}, weighted", ("wer_weighted",), "rate", True,
     "all errors / all reference words"),
    ("{metric}, unweighted", ("wer_unweighted",), "rate", True, "mean of the per-file rates"),
    ("{metric}, weighted, raw", ("wer_weighted_raw",), "rate", True,
     "before normalisation (formatting differences count)"),
    ("segment start error, median", ("start_error", "median"), "seconds", True,
     "|recognised - reference| start of each segment matched to a cue"),
    ("segment start error, p90", ("start_error", "p90"), "seconds", True, "90th percentile"),
    ("segments timed (start)", ("start_error", "count"), "count", None,
     "recognised segments matched to a cue"),
    ("segment end error, median", ("end_error", "median"), "seconds", True,
     "|recognised - reference| end of each matched segment"),
    ("segment end error, p90", ("end_error", "p90"), "seconds", True, "90th percentile"),
    ("segments timed (end)", ("end_error", "count"), "count", None, ""),
    ("insertion rate", ("insertion_rate",), "rate", True, "inserted words / reference words"),
    ("repeated 5-gram rate", ("repeated_5gram_rate",), "rate", True,
     "5-word sequences that already occurred earlier in the recognised text (loops)"),
    ("longest repeated run", ("longest_repeated_run",), "count", True,
     "words in the longest stretch repeating the span before it"),
    ("words in reference silences", ("words_in_silences",), "count", True,
     "recognised words timed in a gap between reference cues"),
    ("probe words", ("probe_words",), "count", True,
     "words written on non-speech probes (0 is right)"),
)


# --- values --------------------------------------------------------------------------------

def _number(value) -> float | None:
    """`value` as a finite float, or None when it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _get(data, *keys):
    """data[k1][k2]..., or None where any level is missing or not a dict."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def format_value(value, kind: str) -> str:
    """A rate as a percentage, seconds with 2 decimals, a count as an integer; "—" if missing."""
    x = _number(value)
    if x is None:
        return MISSING if value is None or not isinstance(value, str) else value
    if kind == "rate":
        return f"{x * 100:.2f}%"
    if kind == "seconds":
        return f"{x:.2f} s"
    return f"{x:.0f}" if x == int(x) else f"{x:g}"


def format_delta(before, after, kind: str) -> str:
    """after - before with its sign: percentage points for rates, seconds, counts."""
    a, b = _number(after), _number(before)
    if a is None or b is None:
        return MISSING
    d = a - b
    if kind == "rate":
        return f"{d * 100:+.2f} pts"
    if kind == "seconds":
        return f"{d:+.2f} s"
    return f"{d:+.0f}" if d == int(d) else f"{d:+g}"


def _delta_class(before, after, lower_is_better) -> str:
    a, b = _number(after), _number(before)
    if lower_is_better is None or a is None or b is None or a == b:
        return ""
    return "better" if (a < b) == lower_is_better else "worse"


def escape(value) -> str:
    """`value` as HTML text (None as nothing)."""
    return html.escape("" if value is None else str(value), quote=True)


def _runs(results: dict) -> list[tuple[str, dict]]:
    """(key, run) for the runs present, before first."""
    runs = _get(results, "runs") or {}
    return [(key, runs[key]) for key in RUN_KEYS if isinstance(runs.get(key), dict)]


def _run_line(key: str, run: dict) -> str:
    """What a run is: its label (the folder of transcripts) and the model probed."""
    line = f"{key}: {run.get('label') or MISSING}"
    return line + (f" (probes: {run['probe_model']})" if run.get("probe_model") else "")


def _files(run: dict) -> dict[str, dict]:
    files = run.get("files") or []
    return {str(f.get("name", f"#{i + 1}")): f for i, f in enumerate(files) if isinstance(f, dict)}


def _file_names(runs: list[tuple[str, dict]]) -> list[str]:
    """Every file of any run: the last run's order, then any only the others have."""
    names: list[str] = []
    for _, run in reversed(runs):
        names += [n for n in _files(run) if n not in names]
    return names


# --- word alignment ------------------------------------------------------------------------

def align_words(reference: str, hypothesis: str) -> tuple[list[tuple[str, str, str | None]],
                                                          list[tuple[str, str, str | None]]]:
    """Each reference word and each recognised word as (word, mark, counterpart).

    mark: "ok" (matched), "sub" (substituted; counterpart is the word on the other side),
    "del" (reference word not recognised), "ins" (recognised word not in the reference), or
    "" for tokens of punctuation alone, which take no part in the alignment.
    """
    ref = (reference or "").split()
    hyp = (hypothesis or "").split()
    ref_keys = [_NOT_WORD.sub("", w.lower()) for w in ref]
    hyp_keys = [_NOT_WORD.sub("", w.lower()) for w in hyp]
    ref_at = [i for i, k in enumerate(ref_keys) if k]  # alignment position -> token index
    hyp_at = [i for i, k in enumerate(hyp_keys) if k]
    ref_marks: list[list] = [[w, "", None] for w in ref]
    hyp_marks: list[list] = [[w, "", None] for w in hyp]
    if not ref_at or not hyp_at:
        for i in ref_at:
            ref_marks[i][1] = "del"
        for i in hyp_at:
            hyp_marks[i][1] = "ins"
    else:
        import jiwer

        out = jiwer.process_words(" ".join(ref_keys[i] for i in ref_at),
                                  " ".join(hyp_keys[i] for i in hyp_at))
        kinds = {"equal": "ok", "substitute": "sub", "delete": "del", "insert": "ins"}
        for chunk in out.alignments[0]:
            kind = kinds[chunk.type]
            for k in range(chunk.ref_start_idx, chunk.ref_end_idx):
                ref_marks[ref_at[k]][1] = kind
            for k in range(chunk.hyp_start_idx, chunk.hyp_end_idx):
                hyp_marks[hyp_at[k]][1] = kind
            if kind == "sub":
                for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
                    r = ref_at[chunk.ref_start_idx + offset]
                    h = hyp_at[chunk.hyp_start_idx + offset]
                    ref_marks[r][2], hyp_marks[h][2] = hyp[h], ref[r]
    return [tuple(m) for m in ref_marks], [tuple(m) for m in hyp_marks]


def _marked(tokens: list[tuple[str, str, str | None]], side: str) -> str:
    """The words as HTML, each error in a span of its class."""
    other = "recognised as" if side == "reference" else "reference:"
    parts = []
    for word, mark, counterpart in tokens:
        if mark == "sub":
            parts.append(f'<span class="sub" title="{escape(other)} {escape(counterpart)}">'
                         f'{escape(word)}</span>')
        elif mark in ("del", "ins"):
            parts.append(f'<span class="{mark}">{escape(word)}</span>')
        else:
            parts.append(escape(word))
    return " ".join(parts) if parts else '<span class="muted">(empty)</span>'


# --- charts --------------------------------------------------------------------------------

def _png_data_url(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _rate_chart(names: list[str], runs: list[tuple[str, dict]], metric: str) -> str | None:
    """Horizontal bars of each file's rate, one bar per run; None without any rate."""
    series = [(key, [_number(_get(_files(run).get(n), "rate")) for n in names])
              for key, run in runs]
    if not any(v is not None for _, values in series for v in values):
        return None
    from matplotlib.ticker import PercentFormatter

    fig, ax = _figure(6.4, 1.3 + 0.42 * len(names) * max(len(series), 1))
    height = 0.8 / len(series)
    for j, (key, values) in enumerate(series):
        ys = [i + (j - (len(series) - 1) / 2) * height for i in range(len(names))]
        bars = ax.barh(ys, [v or 0.0 for v in values], height=height, color=COLORS[key], label=key)
        ax.bar_label(bars, labels=[format_value(v, "rate") for v in values], padding=3, fontsize=8)
    ax.set_yticks(range(len(names)), [n if len(n) <= 28 else n[:27] + "…" for n in names],
                  fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, max(v or 0.0 for _, values in series for v in values) * 1.25 or 1.0)
    ax.set_xlabel(f"{metric} per file")
    ax.grid(axis="x", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="lower right")
    return _png_data_url(fig)


def _start_error_histogram(runs: list[tuple[str, dict]]) -> str | None:
    """Overlaid histograms of every run's start-time errors; None without any."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    series = []
    for key, run in runs:
        values = [x for f in _files(run).values() for x in (f.get("start_errors") or [])
                  if _number(x) is not None]
        if values:
            series.append((key, np.asarray(values, dtype=float)))
    if not series:
        return None
    everything = np.concatenate([v for _, v in series])
    # a few far outliers would squeeze the rest into one bin: with enough values the range
    # ends at the 1st and 99th percentiles, and the outer bins take what lies beyond
    lo, hi = np.percentile(everything, [1, 99] if len(everything) >= 100 else [0, 100])
    if hi - lo < 1e-3:
        lo, hi = lo - 0.05, hi + 0.05
    bins = np.linspace(lo, hi, 31)
    fig, ax = _figure(6.4, 3.4)
    tallest = 0
    for key, values in series:
        label = f"{key} (n={len(values)}, median |error| {np.median(np.abs(values)):.2f} s)"
        clipped = np.clip(values, lo, hi)
        counts, _, _ = ax.hist(clipped, bins=bins, color=COLORS[key], alpha=0.5, label=label)
        ax.hist(clipped, bins=bins, color=COLORS[key], histtype="step", lw=1.2)
        tallest = max(tallest, counts.max())
    beyond = (everything < lo).any() or (everything > hi).any()
    ax.set_xlabel("segment start error (s)"
                  + ("; the outer bins also hold values beyond" if beyond else ""))
    ax.set_ylabel("segments")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set_ylim(0, tallest * 1.45)  # room above the bars for the legend
    ax.legend(fontsize=8, loc="upper right")
    return _png_data_url(fig)


def interpolation_figure(sweep: dict):
    """Domain WER against general WER of each interpolation α (interpolation.py's sweep): the
    original (α = 0) and the fine-tune (α = 1) in the report's before/after colours, the
    recommended α starred, the domain WER that keeps the required share of the gain dashed and
    the original's general WER dotted. A matplotlib Figure (no pyplot state)."""
    from matplotlib.ticker import PercentFormatter

    points = sorted(sweep.get("points") or [], key=lambda p: p["alpha"])
    best = sweep.get("recommended") or {}
    fig, ax = _figure(6.4, 4.6)
    xs, ys = [p["general_wer"] for p in points], [p["domain_wer"] for p in points]
    ax.plot(xs, ys, "o-", color="#7b8794", zorder=1)
    for p in points:
        ax.annotate(f"α={p['alpha']:g}", (p["general_wer"], p["domain_wer"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ends = {0.0: ("original (α=0)", "before"), 1.0: ("fine-tuned (α=1)", "after")}
    for p in points:
        if p["alpha"] in ends:
            label, key = ends[p["alpha"]]
            ax.scatter([p["general_wer"]], [p["domain_wer"]], s=70, color=COLORS[key], label=label, zorder=2)
    first = next((p for p in points if p["alpha"] == 0.0), None)
    last = next((p for p in points if p["alpha"] == 1.0), None)
    if first and last and first["domain_wer"] > last["domain_wer"]:
        keep = best.get("keep_gain", 0.9)
        line = first["domain_wer"] - keep * (first["domain_wer"] - last["domain_wer"])
        ax.axhline(line, ls="--", lw=1, color="#1b7a3e", label=f"keeps {keep:.0%} of the domain gain")
    if first:
        ax.axvline(first["general_wer"], ls=":", lw=1, color=COLORS["before"], label="original's general WER")
    if best:
        ax.scatter([best["general_wer"]], [best["domain_wer"]], marker="*", s=260, color="#f0b429",
                   edgecolors="#1f2933", label=f"recommended α={best['alpha']:g}", zorder=3)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("general WER (what the model knew)")
    ax.set_ylabel("domain WER (what it learned)")
    ax.set_title("weight interpolation: fine-tune weight α")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _interpolation_section(sweep: dict) -> str:
    """The sweep's table and curve (see `interpolation_figure`)."""
    best = sweep.get("recommended") or {}
    rows = []
    for p in sorted(sweep.get("points") or [], key=lambda p: p["alpha"]):
        label = f"{p['alpha']:g}" + (" ★ recommended" if p["alpha"] == best.get("alpha") else "")
        rows.append(f'<tr><th scope="row">{escape(label)}</th>'
                    f'<td class="num">{escape(format_value(p["domain_wer"], "rate"))}</td>'
                    f'<td class="num">{escape(format_value(p["general_wer"], "rate"))}</td></tr>')
    kept = format_value(best.get("kept_gain"), "rate")
    note = (f"α weights the fine-tune: θ = α·θ_fine-tuned + (1−α)·θ_original. Recommended α "
            f"{best.get('alpha', MISSING)}: {best.get('reason', '')}; it keeps {kept} of the domain gain, "
            f"general WER {format_delta(0, best.get('general_change'), 'rate')} against the original. "
            f"Checkpoint: {sweep.get('checkpoint', MISSING)}.")
    return (f'<p class="note">{escape(note)}</p><div class="charts"><figure>'
            f'<table class="summary"><thead><tr><th>α</th><th class="num">domain WER</th>'
            f'<th class="num">general WER</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'</figure><figure><img src="{_png_data_url(interpolation_figure(sweep))}" '
            f'alt="domain WER against general WER for each α"><figcaption>domain WER against general '
            f'WER for each α</figcaption></figure></div>')


# --- sections ------------------------------------------------------------------------------

def _summary_table(results: dict, runs: list[tuple[str, dict]]) -> str:
    metric = str(results.get("metric") or "WER")
    compare = len(runs) > 1
    head = "".join(f'<th class="num">{escape(k)}</th>' for k, _ in runs)
    if compare:
        head += '<th class="num">change</th>'
    rows = []
    for label, path, kind, lower_is_better, note in SUMMARY_ROWS:
        values = [_get(run, "summary", *path) for _, run in runs]
        cells = "".join(f'<td class="num">{escape(format_value(v, kind))}</td>' for v in values)
        if compare:
            cls = _delta_class(values[0], values[-1], lower_is_better)
            cells += (f'<td class="num {cls}">'
                      f'{escape(format_delta(values[0], values[-1], kind))}</td>')
        note_html = f'<div class="note">{escape(note)}</div>' if note else ""
        rows.append(f'<tr><th scope="row">{escape(label.format(metric=metric))}{note_html}</th>'
                    f"{cells}</tr>")
    return (f'<table class="summary"><thead><tr><th>measure</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _charts(results: dict, runs: list[tuple[str, dict]], names: list[str]) -> str:
    metric = str(results.get("metric") or "WER")
    parts = []
    rate = _rate_chart(names, runs, metric) if names else None
    hist = _start_error_histogram(runs)
    for url, alt, caption in (
            (rate, f"{metric} per file", f"{metric} of each file"
             + (", before and after" if len(runs) > 1 else "")),
            (hist, "histogram of segment start errors",
             "start error of each recognised segment matched to a reference cue "
             "(recognised minus reference)"
             + ("; before and after overlaid" if len(runs) > 1 else ""))):
        if url is None:
            parts.append(f'<figure><p class="muted">{escape(caption)}: {MISSING} (nothing to '
                         f'draw)</p></figure>')
        else:
            parts.append(f'<figure><img src="{url}" alt="{escape(alt)}">'
                         f"<figcaption>{escape(caption)}</figcaption></figure>")
    return f'<div class="charts">{"".join(parts)}</div>'


def _probe_table(runs: list[tuple[str, dict]]) -> str:
    probes = {key: {str(p.get("name", f"#{i + 1}")): p
                    for i, p in enumerate(run.get("probes") or []) if isinstance(p, dict)}
              for key, run in runs}
    names: list[str] = []
    for key, _ in reversed(runs):
        names += [n for n in probes[key] if n not in names]
    if not names:
        return f'<p class="muted">No probes were run ({MISSING}).</p>'
    head = "".join(f'<th class="num">{escape(k)}: words</th><th>{escape(k)}: text</th>' for k, _ in runs)
    rows = []
    for name in names:
        cells = []
        for key, _ in runs:
            probe = probes[key].get(name) or {}
            words = _number(probe.get("words"))
            cls = "" if words is None else ("probe-bad" if words > 0 else "probe-ok")
            cells.append(f'<td class="num {cls}">{escape(format_value(probe.get("words"), "count"))}'
                         f'</td><td class="probe-text">{escape(probe.get("text") or MISSING)}</td>')
        rows.append(f'<tr><th scope="row">{escape(name)}</th>{"".join(cells)}</tr>')
    return (f'<table class="probes"><thead><tr><th>probe</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


LEGEND = ('<p class="legend"><span class="swatch">plain: matched</span>'
          '<span class="swatch"><span class="sub">substitution</span> (reference word and the '
          'word recognised in its place)</span>'
          '<span class="swatch"><span class="del">deletion</span> (in the reference, not '
          'recognised)</span>'
          '<span class="swatch"><span class="ins">insertion</span> (recognised, not in the '
          'reference)</span></p>'
          '<p class="note">Words are matched lower-cased without punctuation, as written.</p>')

FILE_COLUMNS = (("rate", "rate"), ("substitutions", "count"), ("deletions", "count"),
                ("insertions", "count"), ("reference_words", "count"), ("insertion_rate", "rate"),
                ("repeated_5gram_rate", "rate"), ("longest_repeated_run", "count"),
                ("words_in_silences", "count"))


def _file_section(name: str, runs: list[tuple[str, dict]], metric: str) -> str:
    headers = (metric, "S", "D", "I", "ref. words", "insertion rate", "repeated 5-grams",
               "longest run", "words in silences")
    head = "".join(f'<th class="num">{escape(h)}</th>' for h in headers)
    rows, columns = [], []
    for key, run in runs:
        entry = _files(run).get(name)
        cells = "".join(f'<td class="num">{escape(format_value(_get(entry, field), kind))}</td>'
                        for field, kind in FILE_COLUMNS)
        rows.append(f"<tr><th>{escape(key)}</th>{cells}</tr>")
        if entry is None:
            body = f'<p class="muted">not in this run ({MISSING})</p>'
        else:
            ref, hyp = align_words(entry.get("reference") or "", entry.get("hypothesis") or "")
            body = (f'<div class="label">reference</div><p class="text">'
                    f'{_marked(ref, "reference")}</p>'
                    f'<div class="label">recognised</div><p class="text">'
                    f'{_marked(hyp, "recognised")}</p>')
        columns.append(f'<div class="run"><h4>{escape(key)}</h4>{body}</div>')
    return (f'<section class="file"><h3>{escape(name)}</h3>'
            f'<table class="filestats"><thead><tr><th>run</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>'
            f'<div class="pair">{"".join(columns)}</div></section>')


# --- the page ------------------------------------------------------------------------------

def render_html(results: dict) -> str:
    """The report page of `results` (see the module docstring) as one HTML string."""
    results = results if isinstance(results, dict) else {}
    runs = _runs(results)
    metric = str(results.get("metric") or "WER")
    names = _file_names(runs)
    title = str(results.get("title") or "whisperft evaluation report")
    meta = (f"metric {metric}, normalizer {results.get('normalizer') or MISSING}, "
            f"{len(names)} file{'s' if len(names) != 1 else ''}")
    if len(runs) > 1:
        meta += "; change = after − before (rates in percentage points, pts)"
    files = "".join(_file_section(n, runs, metric) for n in names)
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(meta)}</p>',
        *(f'<p class="meta">{escape(_run_line(k, r))}</p>' for k, r in runs),
        "<h2>Summary</h2>",
        _summary_table(results, runs) if runs else f'<p class="muted">No runs ({MISSING}).</p>',
        f"<h2>{escape(metric)} per file and timestamp errors</h2>",
        _charts(results, runs, names),
        "<h2>Non-speech probes</h2>",
        '<p class="note">Sound with no word in it (silence, noise, hum, music): every word '
        'written there is a hallucination, so 0 is right.</p>',
        _probe_table(runs),
        *(["<h2>Weight interpolation: domain against general WER</h2>",
            _interpolation_section(results["interpolation"])] if results.get("interpolation") else []),
        "<h2>Transcripts</h2>",
        LEGEND,
        files or f'<p class="muted">No files ({MISSING}).</p>',
    ]
    return page(title, body)


def page(title: str, body: list[str], extra_css: str = "") -> str:
    """A self-contained HTML page: the report's style (plus `extra_css`), then `body`'s parts."""
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}{extra_css}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_html_report(results: dict, path: str | Path) -> Path:
    """Write the report page of `results` to `path` (atomically) and return the path."""
    path = Path(path)
    atomic_write_text(path, render_html(results))
    return path
