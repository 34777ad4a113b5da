// The "My container" side panel: the hub's reclaim warning, container card, one card per GPU with sparklines,
// processes, errors. Built with textContent only: nothing from the server is parsed as HTML.
import { bytesPair, clockTime, countdown, duration, shortUuid, utilization } from './format';
import { IGPU, IReclaim, IStatus, StatusModel } from './model';
import { StatusView } from './view';

const SVG_NS = 'http://www.w3.org/2000/svg';

function el<K extends keyof HTMLElementTagNameMap>(
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

function row(list: HTMLElement, label: string, value: string, key?: string): void {
  const dt = el('dt', undefined, label);
  const dd = el('dd', undefined, value);
  if (key) {
    dd.dataset.key = key;
  }
  list.append(dt, dd);
}

export function sparkline(values: number[], label: string): SVGSVGElement {
  const width = 120;
  const height = 24;
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', 'jp-gpuspawn-sparkline');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const line = document.createElementNS(SVG_NS, 'polyline');
  const step = values.length > 1 ? width / (values.length - 1) : width;
  line.setAttribute(
    'points',
    values
      .map((v, i) => `${(i * step).toFixed(1)},${(height - (Math.min(100, Math.max(0, v)) / 100) * height).toFixed(1)}`)
      .join(' ')
  );
  svg.appendChild(line);
  return svg;
}

function setText(node: HTMLElement, text: string): void {
  // Only real changes touch the DOM: inside role="alert" every change is read out by a screen reader.
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

const RECLAIM_FALLBACK: { [reason: string]: string } = {
  idle: 'Your GPU has been idle for a long time.',
  budget: 'Your GPU time is used up.'
};

const RECLAIM_ADVICE: { [reason: string]: string } = {
  idle:
    'To keep it: use your GPU (start your training), or save your work and start a CPU-only server from ' +
    'File → Hub Control Panel. Your files in your home directory are kept.',
  // using the GPU does not help against a used-up budget
  other:
    'Save your work now. You can start a CPU-only server from File → Hub Control Panel. ' +
    'Your files in your home directory are kept.'
};

/**
 * The hub's warning at the top of the panel. One element for as long as the warning lasts, updated in place:
 * the panel re-renders at every poll, and a role="alert" element made anew each time would be announced anew.
 */
class ReclaimNotice {
  readonly node = el('section', 'jp-gpuspawn-reclaim');

  constructor() {
    this.node.setAttribute('role', 'alert');
    this._countdown.dataset.key = 'reclaim-countdown';
    this._at.dataset.key = 'reclaim-time';
    this._message.dataset.key = 'reclaim-message';
    const heading = el('h3', 'jp-gpuspawn-reclaim-heading', 'This server will be stopped in ');
    heading.append(this._countdown, ' (at ', this._at, ')');
    this.node.append(heading, this._message, this._advice);
  }

  update(reclaim: IReclaim, secondsLeft: number): void {
    const reason = reclaim.reason ?? '';
    setText(this._countdown, countdown(secondsLeft));
    setText(this._at, clockTime(secondsLeft));
    setText(this._message, reclaim.message || RECLAIM_FALLBACK[reason] || 'The hub needs this server’s GPU.');
    setText(this._advice, RECLAIM_ADVICE[reason === 'idle' ? 'idle' : 'other']);
  }

  private _countdown = el('span', 'jp-gpuspawn-reclaim-countdown');
  private _at = el('span');
  private _message = el('p', 'jp-gpuspawn-reclaim-message');
  private _advice = el('p', 'jp-gpuspawn-reclaim-advice');
}

export class ContainerPanel extends StatusView {
  constructor(model: StatusModel) {
    super(model);
    this.id = 'jp-gpuspawn-panel';
    this.addClass('jp-gpuspawn-panel');
    this.title.caption = 'My container';
    this.node.append(this._heading, this._body);
    this.render();
  }

  protected render(): void {
    const status = this.model.status;
    this._renderReclaim();
    // everything below the heading and the warning is rebuilt at each poll
    const node = this._body;
    node.replaceChildren();
    if (this.model.error) {
      node.appendChild(el('p', 'jp-gpuspawn-error', this.model.error));
    }
    if (!status) {
      node.appendChild(el('p', undefined, 'Loading…'));
      return;
    }
    node.appendChild(this._containerCard(status));
    if (status.gpus.length === 0) {
      node.appendChild(el('p', 'jp-gpuspawn-cpu-only', 'CPU only: no GPU is assigned to this server.'));
    }
    for (const gpu of status.gpus) {
      node.appendChild(this._gpuCard(gpu));
    }
    if (status.errors.length) {
      const list = el('ul', 'jp-gpuspawn-errors');
      for (const message of status.errors) {
        list.appendChild(el('li', undefined, message));
      }
      node.appendChild(list);
    }
  }

  private _renderReclaim(): void {
    const reclaim = this.model.status?.reclaim;
    const secondsLeft = this.model.reclaimSecondsLeft();
    if (!reclaim || secondsLeft === null) {
      this._reclaim?.node.remove();
      this._reclaim = null;
      return;
    }
    if (!this._reclaim) {
      this._reclaim = new ReclaimNotice();
      this._heading.after(this._reclaim.node);
    }
    this._reclaim.update(reclaim, secondsLeft);
  }

  private _containerCard(status: IStatus): HTMLElement {
    const c = status.container;
    const card = el('section', 'jp-gpuspawn-card jp-gpuspawn-container');
    const list = el('dl');
    row(list, 'Image', c.image ?? '?', 'image');
    if (c.course) {
      row(list, 'Course', c.course, 'course');
    }
    row(list, 'Memory', bytesPair(c.memory_used, c.memory_limit), 'memory');
    const cpuUsed = c.cpu_used === null || c.cpu_used === undefined ? '?' : c.cpu_used.toFixed(2);
    row(list, 'CPU', `${cpuUsed} of ${c.cpu_limit ?? 'all'} cores`, 'cpu');
    row(list, 'Shared memory', bytesPair(c.shm_used, c.shm_size), 'shm');
    row(list, 'Processes', `${c.pids ?? '?'} of ${c.pids_limit ?? 'no limit'}`, 'pids');
    row(list, 'Uptime', duration(c.uptime_seconds), 'uptime');
    if (c.container_id) {
      row(list, 'Container', c.container_id, 'container-id');
    }
    card.append(el('h3', undefined, 'Container'), list);
    return card;
  }

  private _gpuCard(gpu: IGPU): HTMLElement {
    const card = el('section', 'jp-gpuspawn-card jp-gpuspawn-gpu');
    card.dataset.uuid = gpu.uuid;
    const title = el('h3', undefined, `GPU ${gpu.index ?? '?'}: ${gpu.name ?? 'unknown'}`);
    if (gpu.simulated) {
      title.appendChild(el('span', 'jp-gpuspawn-badge', 'simulated'));
    }
    const list = el('dl');
    row(list, 'UUID', shortUuid(gpu.uuid), 'uuid');
    row(list, 'Utilisation', utilization(gpu), 'utilization');
    if (gpu.mig_profile) {
      row(list, 'MIG slice', `${gpu.mig_profile} of ${shortUuid(gpu.parent_uuid ?? '?')}`, 'mig');
    }
    row(list, 'Memory', bytesPair(gpu.memory_used, gpu.memory_total), 'gpu-memory');
    row(list, 'Temperature', gpu.temperature_c === null ? '?' : `${gpu.temperature_c} °C`, 'temperature');
    if (gpu.power_w !== null) {
      row(list, 'Power', `${gpu.power_w.toFixed(0)} W`, 'power');
    }
    if (gpu.compute_capability) {
      row(list, 'Compute capability', gpu.compute_capability, 'cc');
    }
    const history = this.model.history(gpu.uuid);
    const lines = el('div', 'jp-gpuspawn-sparklines');
    if (!gpu.mig_profile) {
      // a MIG slice has no utilisation figures: a flat line would be a wrong one
      lines.append(
        el('span', undefined, 'utilisation'),
        sparkline(history.utilization, 'GPU utilisation, last minutes')
      );
    }
    lines.append(
      el('span', undefined, 'memory'),
      sparkline(history.memory, 'GPU memory, last minutes')
    );
    card.append(title, list, lines);
    const procs = el('div', 'jp-gpuspawn-processes');
    if (gpu.processes.length === 0) {
      procs.appendChild(el('p', undefined, 'No GPU processes of yours.'));
    } else {
      const table = el('table');
      const head = el('tr');
      head.append(el('th', undefined, 'PID'), el('th', undefined, 'Command'), el('th', undefined, 'Memory'));
      table.appendChild(head);
      for (const p of gpu.processes) {
        const tr = el('tr');
        tr.append(
          el('td', undefined, String(p.pid)),
          el('td', undefined, p.command ?? '?'),
          el('td', undefined, p.used_memory === null ? '?' : bytesPair(p.used_memory, null).replace(' (no limit)', ''))
        );
        table.appendChild(tr);
      }
      procs.appendChild(table);
    }
    card.appendChild(procs);
    return card;
  }

  private _heading = el('h2', 'jp-gpuspawn-heading', 'My container');
  private _reclaim: ReclaimNotice | null = null;
  private _body = el('div', 'jp-gpuspawn-body');
}
