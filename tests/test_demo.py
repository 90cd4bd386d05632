"""The demo pipeline end to end on a cut-down configuration: real tiny.en, real (synthetic)
speech, create_data -> transcribe -> calculate_metric -> run_finetuning -> again, and the
evaluation page (report.html) of both models, and the general-English check of the fine-tune."""

from __future__ import annotations

import json

import pytest

from conftest import require_tool


@pytest.mark.slow
def test_demo_pipeline_lowers_wer(tmp_path, tiny_en):
    require_tool("espeak-ng")
    from whisperft.demo import DemoOptions, run_demo

    out = tmp_path / "demo"
    rc = run_demo(DemoOptions(out_dir=str(out), scale=0.3, train_steps=8, eval_steps=8, batch_size=4))
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0
    assert summary["wer_after"] < summary["wer_before"] * 2 / 3  # at least a third fewer errors
    assert (out / "model" / "best_model.pt").is_file() and (out / "model" / "loss_curve.png").is_file()
    # the evaluation page holds both models' WER, as the printed summary gives them
    from whisperft.report import format_value

    page = (out / "report.html").read_text(encoding="utf-8")
    report = (out / "report.md").read_text(encoding="utf-8")
    for wer in (summary["wer_before"], summary["wer_after"]):
        assert format_value(wer, "rate") in page and format_value(wer, "rate") in report
    for key in ("before", "after"):
        assert summary[key]["probe_words"] is not None and summary[key]["start_error_median"] is not None
    assert "segment start error, median" in report and "words on non-speech probes" in report
    # the general check: the original, the average and the fine-tune on the general-English set,
    # the recommendation made by interpolate's own rule and printed as interpolate prints it
    from whisperft.interpolation import SweepPoint, recommend_alpha, summary_lines

    sweep = summary["interpolation"]
    points = [SweepPoint(**p) for p in sweep["points"]]
    assert [p.alpha for p in points] == [0.0, 0.5, 1.0] and all(p.general_wer > 0 for p in points)
    assert sweep["recommended"] == json.loads(json.dumps(recommend_alpha(points)))
    assert "## General English: what the fine-tune kept" in report
    assert all(line in report for line in summary_lines(sweep))
    # the fine-tuned SRTs still have sane, increasing timestamps
    from whisperft.subtitles import read_subtitles

    for srt in sorted((out / "transcripts_after").glob("*.srt")):
        cues = read_subtitles(srt)
        assert cues
        assert all(c.start < c.end for c in cues)
        assert all(a.start <= b.start for a, b in zip(cues, cues[1:]))
