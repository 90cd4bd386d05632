"""The data check's findings (datacheck.py's JSON) as one self-contained HTML page in the style
of the evaluation report: what share of the data looks sound, each file's timing estimate, one
line per problem a person can act on (worst first), and each file's cues beside what the model
heard. No script, no network."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_write_text
from .report import escape as _e
from .report import page

EXTRA_CSS = """
tr.bad td { background: #fde2e2; }
td.kind { white-space: nowrap; font-weight: 600; }
td.file { white-space: nowrap; }
details { margin: .3rem 0 1rem; }
summary { cursor: pointer; }
"""


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _summary(summary: dict) -> str:
    share = summary.get("sound_share")
    rows = [("files", summary.get("files")), ("files without a problem", summary.get("files_sound")),
            ("cues", summary.get("cues")), ("cues without a problem", summary.get("cues_sound")),
            ("share of cue time without a problem", "—" if share is None else f"{100 * share:.1f}%")]
    rows += [(f"problems: {kind}", n) for kind, n in (summary.get("problems") or {}).items()]
    body = "".join(f"<tr><td>{_e(k)}</td><td class=\"num\">{_e(v)}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _timing_table(files: list[dict]) -> str:
    rows = []
    for f in files:
        t = f.get("timing")
        if not t:
            rows.append(f"<tr><td>{_e(Path(f['audio']).name)}</td><td colspan=\"5\" class=\"muted\">not "
                        "estimated</td></tr>")
            continue
        cls = ' class="bad"' if t.get("off") and t.get("sure") else ""
        rows.append(f"<tr{cls}><td>{_e(Path(f['audio']).name)}</td>"
                    f"<td class=\"num\">{t['offset']:+.2f} s</td><td class=\"num\">{100 * t['drift']:+.2f}%</td>"
                    f"<td>{'sure' if t.get('sure') else 'unsure'}</td>"
                    f"<td class=\"num\">{_e(t.get('paired_edges'))} / {_e(t.get('edges'))}</td>"
                    f"<td>{'yes' if t.get('applied_by_fix_timing') else 'no'}</td></tr>")
    return ("<table><thead><tr><th>file</th><th class=\"num\">offset</th><th class=\"num\">drift</th>"
            "<th>estimate</th><th class=\"num\">cue edges on speech</th><th>--fix-timing moves it</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _problems(files: list[dict]) -> str:
    found = [((p.get("rank", 0), -(p.get("weight") or 0)), Path(f["audio"]).name, p)
             for f in files for p in f.get("problems", [])]
    if not found:
        return '<p class="better">No problems found.</p>'
    rows = "".join(f"<tr><td class=\"file\">{_e(name)}</td><td class=\"kind\">{_e(p['kind'])}</td><td>{_e(p['message'])}</td></tr>"
                   for _, name, p in sorted(found, key=lambda item: item[0]))
    return f"<table><thead><tr><th>file</th><th>problem</th><th>what</th></tr></thead><tbody>{rows}</tbody></table>"


def _cues(f: dict) -> str:
    rows = []
    for c in f.get("cues", []):
        cls = ' class="bad"' if c.get("problems") else ""
        rows.append(f"<tr{cls}><td class=\"num\">{c['index']}</td><td class=\"num\">{c['start']:.2f}</td>"
                    f"<td>{_e(c['text'])}</td><td>{_e(c.get('heard'))}</td><td class=\"num\">{_pct(c.get('cer'))}</td><td class=\"num\">{_pct(c.get('wer'))}</td>"
                    f"<td class=\"num\">{_pct(c.get('speech_share'))}</td><td>{_e(', '.join(c.get('problems', [])))}</td></tr>")
    return (f"<details><summary>{_e(Path(f['audio']).name)}: {len(rows)} cues</summary>"
            "<table><thead><tr><th class=\"num\">#</th><th class=\"num\">start</th><th>cue text</th>"
            "<th>heard</th><th class=\"num\">CER</th><th class=\"num\">WER</th><th class=\"num\">speech</th><th>problems</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></details>")


def render_check_page(data: dict) -> str:
    files = data.get("files", [])
    settings = data.get("settings") or {}
    meta = ", ".join(f"{k} {v}" for k, v in settings.items())
    body = ["<h1>whisperft data check</h1>",
            f'<p class="meta">{_e(meta)}</p>' if meta else "",
            "<h2>Summary</h2>", _summary(data.get("summary", {})),
            "<h2>Problems, worst first</h2>", _problems(files),
            "<h2>Timing: cue time = rate × speech time + offset</h2>",
            '<p class="note">Estimated from where a voice-activity detector hears speech; '
            "drift = rate − 1. Red: off by more than 0.2 s somewhere and sure.</p>",
            _timing_table(files),
            "<h2>Cues and what the model heard</h2>", *(_cues(f) for f in files if f.get("cues"))]
    return page("whisperft data check", body, EXTRA_CSS)


def write_check_page(data: dict, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, render_check_page(data))
    return path
