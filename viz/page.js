// js_on_load of every HTML panel (app.py `_panel`; Gradio 6 runs it once per panel, with `element` the panel and
// `trigger` its event function). A click on a chip (viz/tokens.py: data-p on the chip, data-s on its row)
// selects that position: it is outlined at once, and the panel's 'chip' event tells the server, which sets the
// tab's `position` and `sample` options and redraws. A click on a folded tail ("EOS × 60") opens or closes every
// folded tail of the panel; the class sits on the panel, so it survives the live redraws of its content.
//
// A chip is selected on press and release, not on 'click': a live run redraws the panel ~10 times a second.
// Gradio 6 patches the panel in place (chip text and classes change, the nodes stay), but where the structure
// changes (the run's end folds the EOS tails) nodes are replaced and the rows shrink, so the chip under a held
// pointer can be gone or elsewhere by the release. The press remembers its chip and captures the pointer on the
// panel, so the release reaches it wherever the pointer now is; a release near the press (no drag; a scroll
// cancels the pointer) selects the chip (tests/test_browser_teaching.py presses, waits for a redraw, releases).
const chipOf = (target) => {
  const chip = target instanceof Element ? target.closest('[data-p]') : null;
  const row = chip && chip.closest('[data-s]');
  return chip && row ? {position: Number(chip.dataset.p), sample: Number(row.dataset.s) + 1} : null;
};
let pressed = null;
element.addEventListener('pointerdown', (event) => {
  const chip = chipOf(event.target);
  pressed = chip && {chip, x: event.clientX, y: event.clientY};
  if (chip) {
    try { element.setPointerCapture(event.pointerId); } catch { /* a pointer that is not active (a synthetic event) */ }
  }
});
element.addEventListener('pointercancel', () => { pressed = null; });
element.addEventListener('pointerup', (event) => {
  const press = pressed;
  pressed = null;
  if (!press || Math.hypot(event.clientX - press.x, event.clientY - press.y) > 8) return;
  const {position, sample} = press.chip;
  element.querySelectorAll('.dl-sel').forEach((c) => c.classList.remove('dl-sel'));
  const shown = element.querySelector(`[data-s="${sample - 1}"] [data-p="${position}"]`);
  if (shown) shown.classList.add('dl-sel');
  trigger('chip', press.chip);
});
element.addEventListener('click', (event) => {
  if (event.target instanceof Element && event.target.closest('.dl-fold')) element.classList.toggle('dl-open');
});
