// Small DOM helpers for views that are built once and then updated in place: a student can select and copy a
// value (their GPU UUID) while polling goes on, because a poll changes the data of existing text nodes and the
// attributes of existing elements, never the elements themselves. Nothing from the server is parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/**
 * Show `text` in `node`, keeping its text node: only the node's data changes, and only when it differs (inside
 * role="alert" every change is read out by a screen reader).
 */
export function setText(node: Element, text: string): void {
  const first = node.firstChild;
  if (
    first !== null &&
    first === node.lastChild &&
    first.nodeType === Node.TEXT_NODE
  ) {
    const textNode = first as Text;
    if (textNode.data !== text) {
      textNode.data = text;
    }
  } else if (node.textContent !== text) {
    node.textContent = text;
  }
}

/** Set (or, with null, remove) an attribute when it differs. */
export function setAttr(
  node: Element,
  name: string,
  value: string | null
): void {
  if (value === null) {
    if (node.hasAttribute(name)) {
      node.removeAttribute(name);
    }
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

export function setHidden(node: HTMLElement, hidden: boolean): void {
  if (node.hidden !== hidden) {
    node.hidden = hidden;
  }
}

/**
 * A description list of label/value pairs in a fixed order, each pair a `div.jp-gpuspawn-field` (which HTML allows
 * inside a dl). The CSS keeps a value on one line: beside its label when both fit, on a line of its own when not,
 * and cut with an ellipsis only when even that line is too short; the value's title then carries all of it.
 */
export class Fields {
  readonly node = el('dl', 'jp-gpuspawn-fields');

  /** Add the row `key` (in call order); hidden until set(). */
  add(key: string, label: string): void {
    const row = el('div', 'jp-gpuspawn-field');
    const dt = el('dt', undefined, label);
    const dd = el('dd');
    dd.dataset.key = key;
    row.append(dt, dd);
    row.hidden = true;
    this.node.appendChild(row);
    this._rows.set(key, { row, dd });
  }

  /** Show `value` in row `key`, or hide the row for null. */
  set(key: string, value: string | null, className?: string): void {
    const entry = this._rows.get(key);
    if (!entry) {
      throw new Error(`no field ${key}`);
    }
    setHidden(entry.row, value === null);
    if (value === null) {
      return;
    }
    setText(entry.dd, value);
    setAttr(entry.dd, 'title', value);
    setAttr(entry.dd, 'class', className ?? null);
  }

  value(key: string): HTMLElement | undefined {
    return this._rows.get(key)?.dd;
  }

  private _rows = new Map<string, { row: HTMLElement; dd: HTMLElement }>();
}

/** A sparkline of percentages (0-100): one SVG whose path is redrawn in place; null values leave a gap. */
export class Sparkline {
  static readonly width = 120;
  static readonly height = 24;

  readonly node: SVGSVGElement;

  constructor(label: string) {
    this.node = document.createElementNS(SVG_NS, 'svg');
    this.node.setAttribute('class', 'jp-gpuspawn-sparkline');
    this.node.setAttribute(
      'viewBox',
      `0 0 ${Sparkline.width} ${Sparkline.height}`
    );
    this.node.setAttribute('preserveAspectRatio', 'none');
    this.node.setAttribute('role', 'img');
    this.node.setAttribute('aria-label', label);
    this._path = document.createElementNS(SVG_NS, 'path');
    this.node.appendChild(this._path);
  }

  update(values: (number | null)[]): void {
    setAttr(this._path, 'd', sparklinePath(values));
  }

  private _path: SVGPathElement;
}

/** The SVG path of a sparkline: "M x,y L x,y …", a new M after each gap; a lone point is a dot-sized line. */
export function sparklinePath(
  values: (number | null)[],
  width = Sparkline.width,
  height = Sparkline.height
): string {
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const parts: string[] = [];
  let drawing = false;
  values.forEach((value, i) => {
    if (value === null || !Number.isFinite(value)) {
      drawing = false;
      return;
    }
    const x = (i * step).toFixed(1);
    const y = (
      height -
      (Math.min(100, Math.max(0, value)) / 100) * height
    ).toFixed(1);
    parts.push(`${drawing ? 'L' : 'M'}${x},${y}`);
    drawing = true;
  });
  return parts.join(' ');
}
