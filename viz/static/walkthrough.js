// The walkthrough's step navigation: runs in the browser, no request per click.
element.addEventListener('click', (event) => {
  const target = event.target.closest('[data-goto]');
  if (!target || !element.contains(target)) return;
  const steps = [...element.querySelectorAll('.wt-step')];
  const buttons = [...element.querySelectorAll('.wt-nav [data-goto]')];
  const current = steps.findIndex((s) => !s.hidden);
  const goto = target.dataset.goto;
  let show;
  if (goto === 'all') { show = -1; }
  else if (goto === 'next') { show = Math.min(Math.max(current, 0) + 1, steps.length - 1); }
  else if (goto === 'prev') { show = Math.max(Math.max(current, 0) - 1, 0); }
  else { show = parseInt(goto, 10); }
  steps.forEach((s, i) => { s.hidden = show >= 0 && i !== show; });
  buttons.forEach((b) => b.classList.toggle('wt-active', b.dataset.goto === (show >= 0 ? String(show) : 'all')));
  if (goto === 'next' || goto === 'prev') { element.querySelector('.wt-nav').scrollIntoView({block: 'nearest'}); }
});
