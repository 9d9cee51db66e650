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
  buttons.forEach((b) => {
    const active = b.dataset.goto === (show >= 0 ? String(show) : 'all');
    b.classList.toggle('wt-active', active);
    if (active) { b.setAttribute('aria-current', 'step'); } else { b.removeAttribute('aria-current'); }  // read aloud
  });
  const link = element.querySelector('.wt-link');  // "Link to this step" follows the step shown
  if (link) { link.href = `${link.dataset.link}&step=${show >= 0 ? show + 1 : 'all'}`; }
  const copy = element.querySelector('.wt-copy');
  if (copy) { copy.textContent = 'Copy'; }  // a new step: its link is not copied yet
  if (goto === 'next' || goto === 'prev') { element.querySelector('.wt-nav').scrollIntoView({block: 'nearest'}); }
};
// "Copy" beside the link: to the clipboard where the page may write there (https, or the app on this computer),
// else shown in a box to copy by hand (an app served on a school network over plain http)
const copyLink = (copy) => {
  const link = element.querySelector('.wt-link');
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(link.href).then(() => { copy.textContent = 'Copied'; });
  } else {
    window.prompt('Copy this link:', link.href);
  }
};
element.addEventListener('click', (event) => {
  const copy = event.target.closest('.wt-copy');
  if (copy) { copyLink(copy); return; }
  const target = event.target.closest('[data-goto]');
  if (!target || !element.contains(target)) return;
  go(target.dataset.goto);
  // Next and Back sit in the step they leave: keep the focus in the walkthrough (for the arrow keys) on the strip
  if (target.closest('.wt-step[hidden]')) { element.querySelector('.wt-nav .wt-active')?.focus({preventScroll: true}); }
});
// A teacher at a projector steps with the arrow keys once a step's button has been clicked (the focus is then in
// the walkthrough, so the keys never reach a slider or a text box elsewhere on the page); Home and End go to the
// first and the last step.
const KEYS = {ArrowRight: () => 'next', ArrowLeft: () => 'prev', Home: () => '0',
  End: () => String(element.querySelectorAll('.wt-step').length - 1)};
element.addEventListener('keydown', (event) => {
  if (!Object.hasOwn(KEYS, event.key) || !event.target.closest('.wt-nav, .wt-step')) return;
  event.preventDefault();
  go(KEYS[event.key]());
});
// A link may open the walkthrough on one step, for a class told "open this and look at step 5": ?step=5 or
// ?step=soap in the app's address (with ?example=...), or a handout's (its file with ?step=5 or #step=5). Applied
// once, to the first walkthrough shown (in the app it arrives after the page; studio/links.py checks the value).
const linkedStep = (() => {
  const query = new URLSearchParams(window.location.search);
  const tab = query.get('tab');
  if (tab && tab.toLowerCase() !== 'walkthrough') return null;
  const value = query.get('step') || new URLSearchParams(window.location.hash.slice(1)).get('step');
  return value ? value.trim().toLowerCase() : null;
})();
const openLinkedStep = () => {
  const steps = [...element.querySelectorAll('.wt-step')];
  if (!steps.length) return false;
  const index = /^\d+$/.test(linkedStep)
    ? parseInt(linkedStep, 10) - 1
    : steps.findIndex((s) => s.dataset.step === linkedStep);
  if (linkedStep === 'all') { go('all'); } else if (index >= 0 && index < steps.length) { go(String(index)); }
  return true;
};
if (linkedStep && !openLinkedStep()) {
  const watch = new MutationObserver(() => { if (openLinkedStep()) watch.disconnect(); });
  watch.observe(element, {childList: true, subtree: true});
}
