// js_on_load of every HTML panel (app.py `_panel`; Gradio 6 runs it once per panel, with `element` the panel and
// `trigger` its event function). A click on a chip (viz/tokens.py: data-p on the chip, data-s on its row)
// selects that position: it is outlined at once, and the panel's 'chip' event tells the server, which sets the
// tab's `position` and `sample` options and redraws. A click on a folded tail ("EOS × 60") opens or closes every
// folded tail of the panel; the class sits on the panel, so it survives the live redraws of its content.
element.addEventListener('click', (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (target === null) return;
  if (target.closest('.dl-fold')) {
    element.classList.toggle('dl-open');
    return;
  }
  const chip = target.closest('[data-p]');
  const row = chip && chip.closest('[data-s]');
  if (!chip || !row) return;
  element.querySelectorAll('.dl-sel').forEach((c) => c.classList.remove('dl-sel'));
  chip.classList.add('dl-sel');
  trigger('chip', {position: Number(chip.dataset.p), sample: Number(row.dataset.s) + 1});
});
