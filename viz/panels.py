"""What a view module declares, so the app can lay out any method's tab without knowing the method.

A view module (viz/<method>_view.py) exposes:

    PANELS: list[Panel]      # what it draws, in page order
    OPTIONS: list[Option]    # view controls (numbers), passed to render() by name
    def render(state: State, meta: Meta, *, plots: bool = True, **options) -> dict[str, object]
        # panel name -> HTML string (escaped!) or plotly Figure; plots=False may return None for "plot"
        # panels (the live stream redraws plots less often than HTML)
    def progress(state: State, meta: Meta) -> str   # the status line of a live run (Markdown, escaped)

`state` is a decoding.fold.State (the trace folded up to the frame shown), `meta` the trace's Meta.
Pure: no torch, no gradio.

Options named `position` and `sample` are set by the page when a chip is clicked (viz/page.js: the chip's
data-p, its row's data-s + 1); a view that declares them gets pointing for free. The HTML panels share the
page's styles (viz/page.css): use viz.tokens' chips and answer classes rather than inline styles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Panel:
    name: str
    kind: str  # "html" | "plot"
    label: str
    placeholder: str = ""  # shown before the first run
    height: int = 260  # plots: the empty figure's height
    row: str | None = None  # panels sharing a row name sit side by side


@dataclass(frozen=True)
class Option:
    name: str
    default: float
    label: str
    minimum: float | None = None
