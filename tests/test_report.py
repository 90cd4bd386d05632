"""The HTML evaluation report: the numbers on it, the marked words, escaping, and a page that
needs nothing from outside itself (checked by parsing every src and href); optionally rendered
by headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from whisperft.report import align_words, format_delta, format_value, render_html, write_html_report


def _run(rate_a, rate_b, hypothesis_a, start_errors, probe_words, probe_text, summary):
    return {
        "summary": summary,
        "files": [
            {"name": "dictation_01", "reference": "The patient takes apixaban, 5 milligrams daily.",
             "hypothesis": hypothesis_a, "rate": rate_a, "substitutions": 1, "deletions": 1,
             "insertions": 1, "reference_words": 7, "start_errors": start_errors,
             "end_errors": [0.1, 0.2], "insertion_rate": 0.1429, "repeated_5gram_rate": 0.0,
             "longest_repeated_run": 0, "words_in_silences": 2},
            {"name": "dictation_02", "reference": "Blood pressure <script>alert(1)</script> is fine.",
             "hypothesis": "blood pressure <script>alert(1)</script> is fine", "rate": rate_b,
             "substitutions": 0, "deletions": 0, "insertions": 0, "reference_words": 5,
             "start_errors": None, "insertion_rate": None},
        ],
        "probes": [{"name": "silence", "words": probe_words, "text": probe_text},
                   {"name": "white noise", "words": 0, "text": ""}],
    }


def sample_results() -> dict:
    before = _run(0.4286, 0.2, "the patient takes a big band 5 milligrams",
                  [0.42, -0.3, 0.8, 1.1], 3, "Thank you. Thank you.",
                  {"wer_unweighted": 0.3143, "wer_weighted": 0.3333,
                   "start_error": {"median": 0.42, "p90": 1.1, "count": 4},
                   "end_error": {"median": 0.5, "p90": 0.9, "count": 4},
                   "insertion_rate": 0.0833, "repeated_5gram_rate": 0.012,
                   "longest_repeated_run": 6, "words_in_silences": 4, "probe_words": 3})
    # after: "apixaban" right, "daily" deleted, "twice" inserted, "milligram" for "milligrams"
    after = _run(0.0432, 0.0, "The patient takes twice apixaban 5 milligram.",
                 [0.02, -0.04, 0.06, 0.01], 0, "",
                 {"wer_unweighted": 0.0216, "wer_weighted": 0.0432,
                  "start_error": {"median": 0.03, "p90": 0.06, "count": 4},
                  "end_error": None,
                  "insertion_rate": 0.0123, "repeated_5gram_rate": 0.0,
                  "longest_repeated_run": 0, "words_in_silences": 0, "probe_words": 0})
    before.update(label="out/transcripts_before", probe_model="tiny.en")
    after.update(label="out/transcripts_after", probe_model="out/model/best_model.pt")
    return {"metric": "WER", "normalizer": "whisper", "runs": {"before": before, "after": after}}


class _References(HTMLParser):
    """Every src/href attribute, every tag name, and the text of <style> blocks."""

    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "xlink:href"):
                self.links.append((tag, name, value or ""))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    path = write_html_report(sample_results(), tmp_path_factory.mktemp("report") / "report.html")
    return path.read_text(encoding="utf-8")


def test_formatting():
    assert format_value(0.043, "rate") == "4.30%"
    assert format_value(0.046, "seconds") == "0.05 s"
    assert format_value(3, "count") == "3"
    assert format_value(None, "rate") == format_value(float("nan"), "seconds") == "—"
    assert format_delta(0.3333, 0.0432, "rate") == "-29.01 pts"
    assert format_delta(0.42, 0.03, "seconds") == "-0.39 s"
    assert format_delta(None, 0.03, "seconds") == "—"


def test_summary_holds_both_runs_and_the_change(page):
    for text in ("33.33%", "4.32%", "-29.01 pts",  # weighted WER before, after, change
                 "31.43%", "2.16%",  # unweighted
                 "0.42 s", "0.03 s", "-0.39 s", "1.10 s", "0.06 s",  # start error median, p90
                 "8.33%", "1.23%", "1.20%"):  # insertion rate, repeated 5-grams
        assert text in page, text
    summary = page.split('<table class="summary">')[1].split("</table>")[0]
    row = re.search(r"probe words.*?</tr>", summary).group(0)
    assert re.findall(r'<td class="num[^"]*">([^<]*)</td>', row) == ["3", "0", "-3"]
    assert '<td class="num better">-29.01 pts</td>' in summary
    assert "after: out/transcripts_after (probes: out/model/best_model.pt)" in page
    end_row = re.search(r"segment end error, median.*?</tr>", summary).group(0)
    assert re.findall(r'<td class="num[^"]*">([^<]*)</td>', end_row) == ["0.50 s", "—", "—"]


def test_alignment_marks_each_kind_of_error():
    ref, hyp = align_words("The patient takes apixaban, 5 milligrams daily.",
                           "The patient takes twice apixaban 5 milligram.")
    assert [m for _, m, _ in ref] == ["ok", "ok", "ok", "ok", "ok", "sub", "del"]
    assert [m for _, m, _ in hyp] == ["ok", "ok", "ok", "ins", "ok", "ok", "sub"]
    assert ref[3][0] == "apixaban,"  # shown as written, matched without punctuation
    assert ref[5][2] == "milligram." and hyp[6][2] == "milligrams"
    ref, hyp = align_words("", "thank you")
    assert ref == [] and [m for _, m, _ in hyp] == ["ins", "ins"]
    ref, hyp = align_words("a - b", "")
    assert [m for _, m, _ in ref] == ["del", "", "del"]


def test_page_marks_the_errors_with_their_classes(page):
    assert '<span class="ins">twice</span>' in page
    assert '<span class="del">daily.</span>' in page
    assert re.search(r'<span class="sub" title="recognised as milligram\.">milligrams</span>', page)
    assert re.search(r'<span class="sub" title="reference: milligrams">milligram\.</span>', page)
    # before: "apixaban," was heard as "a big band"
    assert re.search(r'<span class="sub" title="recognised as [^"]+">apixaban,</span>', page)
    for cls in ("sub", "del", "ins"):
        assert f".{cls} " in page.split("</style>")[0]  # styled
        assert f'class="{cls}">' in page.split("<h2>Transcripts</h2>")[1].split("</p>")[0]  # legend


def test_probes_are_listed_and_words_on_them_highlighted(page):
    probes = page.split('<table class="probes">')[1].split("</table>")[0]
    assert '<td class="num probe-bad">3</td><td class="probe-text">Thank you. Thank you.</td>' in probes
    assert probes.count('class="num probe-ok">0</td>') == 3


def test_text_is_escaped(page):
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_missing_values_and_a_single_run_render():
    results = sample_results()
    del results["runs"]["before"]
    results["runs"]["after"]["summary"] = {"wer_weighted": 0.05}
    results["runs"]["after"]["probes"] = None
    page = render_html(results)
    summary = page.split('<table class="summary">')[1].split("</table>")[0]
    assert "change" not in summary and "5.00%" in summary and summary.count("—") == 13
    assert "No probes were run" in page
    bare = render_html({"metric": "CER", "runs": {"after": {"files": [{"name": "x"}]}}})
    assert "<h3>x</h3>" in bare and "CER" in bare and "(empty)" in bare
    assert "No runs" in render_html({})


def test_the_page_needs_nothing_from_outside(page):
    parser = _References()
    parser.feed(page)
    images = [value for tag, name, value in parser.links if tag == "img"]
    assert len(images) == 2 and all(v.startswith("data:image/png;base64,") for v in images)
    for tag, name, value in parser.links:
        assert value.startswith(("data:", "#")), (tag, name, value[:80])
        assert not value.startswith("//") and "http:" not in value and "https:" not in value
    assert "link" not in parser.tags and "script" not in parser.tags
    assert "iframe" not in parser.tags and "object" not in parser.tags
    css = "".join(parser.styles)
    assert css and "@import" not in css and "@font-face" not in css
    assert all(u.startswith("data:") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", page))
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", page)


def test_chromium_renders_the_page(tmp_path):
    """A real browser draws the page (a screenshot with the charts in it). CI does not install
    Chromium, so there it is skipped; WHISPERFT_REQUIRE_BROWSER=1 makes its absence a failure."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    if browser is None:
        if os.environ.get("WHISPERFT_REQUIRE_BROWSER") == "1":
            pytest.fail("WHISPERFT_REQUIRE_BROWSER=1 but no chromium is installed "
                        "(apt-get install chromium)")
        pytest.skip("chromium is not installed (CI does not install it; apt-get install chromium "
                    "to run this check, WHISPERFT_REQUIRE_BROWSER=1 to require it)")
    report = write_html_report(sample_results(), tmp_path / "report.html")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, tables and charts, not a blank page
