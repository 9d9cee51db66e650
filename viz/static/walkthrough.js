// The walkthrough's step navigation: runs in the browser, no request per click.
const go = (goto) => {
  const steps = [...element.querySelectorAll('.wt-step')];
  const buttons = [...element.querySelectorAll('.wt-nav [data-goto]')];
  const current = steps.findIndex((s) => !s.hidden);
  let show;
  if (goto === 'all') { show = -1; }
  else if (goto === 'next') { show = Math.min(Math.max(current, 0) + 1, steps.length - 1); }
  else if (goto === 'prev') { show = Math.max(Math.max(current, 0) - 1, 0); }
  else { show = parseInt(goto, 10); }
  steps.forEach((s, i) => { s.hidden = show >= 0 && i !== show; });
  buttons.forEach((b) => b.classList.toggle('wt-active', b.dataset.goto === (show >= 0 ? String(show) : 'all')));
  if (goto === 'next' || goto === 'prev') { element.querySelector('.wt-nav').scrollIntoView({block: 'nearest'}); }
};
element.addEventListener('click', (event) => {
  const target = event.target.closest('[data-goto]');
  if (!target || !element.contains(target)) return;
  go(target.dataset.goto);
  // Next and Back sit in the step they leave: keep the focus in the walkthrough (for the arrow keys) on the strip
  if (target.closest('.wt-step[hidden]')) { element.querySelector('.wt-nav .wt-active')?.focus({preventScroll: true}); }
});
// A teacher at a projector steps with the arrow keys once a step's button has been clicked (the focus is then in
// the walkthrough, so the keys never reach a slider or a text box elsewhere on the page).
element.addEventListener('keydown', (event) => {
  if (!['ArrowRight', 'ArrowLeft'].includes(event.key) || !event.target.closest('.wt-nav, .wt-step')) return;
  event.preventDefault();
  go(event.key === 'ArrowRight' ? 'next' : 'prev');
});
