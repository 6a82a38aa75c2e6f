"""Two traces from anywhere (issue 14): decoding.divergence.pair makes one divergence trace of two files, so the
Divergence views and the Replay tab's second file compare two seeds, two methods or two settings with no model."""

from __future__ import annotations

import pytest
from test_divergence import CASES, TEXT, _pair
from test_escaping import PAYLOADS, check_html, check_markdown

from decoding.divergence import diverge, pair
from decoding.fold import Fold
from decoding.trace import Trace


def test_a_pair_diffs_like_the_two_files() -> None:
    """Sequence 0 of one file against sequence 1 of another: the same split, cause and evidence as diffing the two
    files; the seeds and temperatures are each file's; the same sequence twice is identical."""
    t = CASES["sampling"]()
    p = pair(t, t)  # samples: 0 = first file's 0, 1 = second file's 0, 2 = first file's 1, 3 = second file's 1
    want, got = diverge(t, 0, t, 1), diverge(p, 0, p, 3)
    assert (got.position, got.cause, got.evidence) == (want.position, want.cause, want.evidence)
    assert (got.a.seed, got.b.seed, got.b.temperature) == (0, 1, 1.0)
    assert diverge(p, 0, p, 1).identical


def test_a_pair_with_other_prompts_is_different_context_and_other_vocabularies_are_refused() -> None:
    a = CASES["sampling"]()
    b = _pair((1, 2, [(2, 0.7), (3, 0.2)]), (1, 3, [(2, 0.7), (3, 0.2)]), prompt=(7, 9))  # a with another prompt
    p = pair(a, b)
    d = diverge(p, 0, p, 3)  # the first file's sample 1 against the second file's sample 2
    assert d.position == 1 and d.cause == "different context" and "the prompts differ" in d.evidence
    TEXT[2] = "x"
    try:
        other = CASES["sampling"]()
    finally:
        TEXT[2] = "b"
    with pytest.raises(ValueError, match="different tokenizers"):
        pair(a, other)


@pytest.mark.filterwarnings("ignore:cannot replay")
def test_the_replay_tab_compares_two_uploaded_files_and_escapes_them(tmp_path) -> None:
    """app.upload_trace with a second file: the pair in the Divergence views, each side named by its file; a hostile
    method name and token text are shown as text; a broken second file or a missing first one gets a clear message."""
    import app
    from viz import divergence_view

    tabs = {name: app._tab(m) for name, m in app.methods.all_methods().items()}
    evil = "".join(PAYLOADS[:6])
    TEXT[3] = evil
    try:
        a, b = CASES["sampling"](), CASES["near-tie"]()
    finally:
        TEXT[3] = "c"
    a.meta.method = evil
    paths = [a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")]
    out = app.upload_trace(tabs, str(paths[0]), {}, "pair-test", str(paths[1]))
    assert out[2].startswith("▶ replaying **Divergence** (two traces)"), out[2]
    check_markdown(out[2])
    texts = " ".join(check_html(v) for v in out[3 + len(tabs):] if isinstance(v, str) and v)
    assert "of the first file" in texts and "of the second file" in texts and evil[:40] in texts
    panels = divergence_view.render(Fold(pair(a, b)).latest(), pair(a, b).meta, sample_a=3, sample_b=2)
    assert "Split at" in panels["split"] and "To fork here" not in panels["split"]  # no model, no fork
    forged = CASES["sampling"]()  # a single file whose params pose as a pair's, every field wrong
    forged.meta.params = {"pair_sources": [{"file": evil, "seq": evil, "method": evil, "seed": evil}, evil],
                          "pair_prompts": evil, "pair_settings": [[evil, evil, evil], evil]}
    for value in divergence_view.render(Fold(forged).latest(), forged.meta).values():
        check_html(value)
    (tmp_path / "bad.json").write_text('{"format": "decoding-lens-trace", "version": 2, "meta": {}, "events": []}')
    for first, second, said in ((paths[0], tmp_path / "bad.json", "the second file&#58; field"),
                                (None, paths[1], "upload the first trace")):
        status = app.upload_trace(tabs, first and str(first), {}, "pair-test", str(second))[2]
        assert "cannot replay this file" in status and said in status, status
        check_markdown(status)
    app.VIEWS.drop_session("pair-test")
    assert isinstance(Trace.load(paths[0]), Trace)
