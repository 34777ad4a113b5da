// jsdom lacks DragEvent, which @lumino/dragdrop (imported by @lumino/widgets) extends at load time; JupyterLab's
// @jupyterlab/testutils shims it the same way.
if (typeof globalThis.DragEvent === 'undefined') {
  globalThis.DragEvent = class DragEvent extends MouseEvent {};
}
