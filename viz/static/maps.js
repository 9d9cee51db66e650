// A click on a map names the patch under the pointer (row, col); the server reads it from the event data.
element.addEventListener('click', (event) => {
  const stage = event.target.closest('.mc-stage');
  if (!stage) return;
  const box = stage.getBoundingClientRect();
  const rows = +stage.dataset.rows, cols = +stage.dataset.cols;
  const row = Math.min(rows - 1, Math.max(0, Math.floor((event.clientY - box.top) / box.height * rows)));
  const col = Math.min(cols - 1, Math.max(0, Math.floor((event.clientX - box.left) / box.width * cols)));
  trigger('click', {row: row, col: col});
});
