// The "My container" side panel: the hub's reclaim warning, the container card, one card per GPU with sparklines,
// processes, errors. Built once and updated in place at every poll (see dom.ts): elements are made only when the
// set of GPUs, processes or messages changes, so a student can select and copy a value while polling goes on.
import { Fields, Sparkline, el, setAttr, setHidden, setText } from './dom';
import {
  bytes,
  bytesPair,
  clockTime,
  cores,
  count,
  countdown,
  duration,
  power,
  shortUuid,
  temperature,
  utilization
} from './format';
import {
  IContainer,
  IGPU,
  IGPUProcess,
  IHistory,
  ILimitWarning,
  IReclaim,
  StatusModel
} from './model';
import { DEFAULT_SETTINGS } from './settings';
import { plainTrans, Trans } from './trans';
import { StatusView } from './view';

const NEAR_LIMIT = 'jp-gpuspawn-near-limit';

/** What a translated sentence holds where its element number `i` goes (see sentence()). */
function slot(i: number): string {
  return `\u0000${i}\u0000`;
}

/**
 * A translated `text`, made with slot(0), slot(1)… as its arguments, as nodes: the words around the slots as text
 * nodes, `nodes` where the translation put their slots (a translation may change their order).
 */
function sentence(text: string, ...nodes: Node[]): Node[] {
  const out: Node[] = [];
  const used = new Set<number>();
  for (const [i, piece] of text.split('\u0000').entries()) {
    if (i % 2 === 0) {
      if (piece) {
        out.push(document.createTextNode(piece));
      }
    } else {
      const n = Number(piece);
      if (nodes[n] && !used.has(n)) {
        used.add(n);
        out.push(nodes[n]);
      }
    }
  }
  nodes.forEach((node, n) => {
    if (!used.has(n)) {
      out.push(document.createTextNode(' '), node);
    }
  });
  return out;
}

/**
 * The hub's warning at the top of the panel. One element for as long as the warning lasts, updated in place: a
 * role="alert" element made anew at each poll would be announced anew.
 */
class ReclaimNotice {
  readonly node = el('section', 'jp-gpuspawn-reclaim');

  constructor(private _trans: Trans) {
    this.node.setAttribute('role', 'alert');
    this._countdown.dataset.key = 'reclaim-countdown';
    this._at.dataset.key = 'reclaim-time';
    this._message.dataset.key = 'reclaim-message';
    const heading = el('h3', 'jp-gpuspawn-reclaim-heading');
    heading.append(
      ...sentence(
        _trans.__(
          'This server will be stopped in %1 (at %2)',
          slot(0),
          slot(1)
        ),
        this._countdown,
        this._at
      )
    );
    this.node.append(heading, this._message, this._advice);
  }

  update(reclaim: IReclaim, secondsLeft: number): void {
    const trans = this._trans;
    const reason = reclaim.reason ?? '';
    setText(this._countdown, countdown(secondsLeft, trans));
    setText(this._at, clockTime(secondsLeft));
    let fallback = trans.__('The hub needs this server’s GPU.');
    if (reason === 'idle') {
      fallback = trans.__('Your GPU has been idle for a long time.');
    } else if (reason === 'budget') {
      fallback = trans.__('Your GPU time is used up.');
    }
    setText(this._message, reclaim.message || fallback);
    setText(
      this._advice,
      reason === 'idle'
        ? trans.__(
            'To keep it: use your GPU (start your training), or save your work and start a CPU-only server ' +
              'from File → Hub Control Panel. Your files in your home directory are kept.'
          )
        : // using the GPU does not help against a used-up budget
          trans.__(
            'Save your work now. You can start a CPU-only server from File → Hub Control Panel. ' +
              'Your files in your home directory are kept.'
          )
    );
  }

  private _countdown = el('span', 'jp-gpuspawn-reclaim-countdown');
  private _at = el('span');
  private _message = el('p', 'jp-gpuspawn-reclaim-message');
  private _advice = el('p', 'jp-gpuspawn-reclaim-advice');
}

class ContainerCard {
  readonly node = el('section', 'jp-gpuspawn-card jp-gpuspawn-container');

  constructor(private _trans: Trans) {
    const f = this._fields;
    f.add('image', _trans.__('Image'));
    f.add('course', _trans.__('Course'));
    f.add('memory', _trans.__('Memory'));
    f.add('cpu', _trans.__('CPU'));
    f.add('shm', _trans.__('Shared memory'));
    f.add('pids', _trans.__('Processes'));
    f.add('uptime', _trans.__('Uptime'));
    f.add('container-id', _trans.__('Container ID'));
    this.node.append(el('h3', undefined, _trans.__('Container')), f.node);
  }

  update(c: IContainer, warnings: ILimitWarning[]): void {
    const trans = this._trans;
    const f = this._fields;
    const near = (key: ILimitWarning['key']) =>
      warnings.some(w => w.key === key) ? NEAR_LIMIT : undefined;
    f.set('image', c.image ?? '?');
    f.set('course', c.course || null);
    f.set(
      'memory',
      bytesPair(c.memory_used, c.memory_limit, trans),
      near('memory')
    );
    f.set('cpu', cores(c.cpu_used, c.cpu_limit, trans));
    f.set('shm', bytesPair(c.shm_used, c.shm_size, trans), near('shm'));
    f.set('pids', count(c.pids, c.pids_limit, trans), near('pids'));
    f.set('uptime', duration(c.uptime_seconds, trans));
    f.set('container-id', c.container_id || null);
  }

  private _fields = new Fields();
}

class ProcessTable {
  readonly node = el('div', 'jp-gpuspawn-processes');

  constructor(private _trans: Trans) {
    const head = el('tr');
    head.append(
      el('th', undefined, _trans.__('PID')),
      el('th', undefined, _trans.__('Command')),
      el('th', undefined, _trans.__('Memory'))
    );
    const thead = el('thead');
    thead.appendChild(head);
    this._table.append(thead, this._body);
    this.node.append(this._none, this._table);
  }

  update(processes: IGPUProcess[]): void {
    setHidden(this._none, processes.length > 0);
    setHidden(this._table, processes.length === 0);
    const wanted = new Set(processes.map(p => p.pid));
    for (const [pid, row] of this._rows) {
      if (!wanted.has(pid)) {
        row.tr.remove();
        this._rows.delete(pid);
      }
    }
    processes.forEach((p, i) => {
      let row = this._rows.get(p.pid);
      if (!row) {
        const tr = el('tr');
        row = { tr, command: el('td'), memory: el('td') };
        tr.append(el('td', undefined, String(p.pid)), row.command, row.memory);
        this._rows.set(p.pid, row);
      }
      if (this._body.children[i] !== row.tr) {
        this._body.insertBefore(row.tr, this._body.children[i] ?? null);
      }
      const command = p.command ?? '?';
      setText(row.command, command);
      setAttr(row.command, 'title', command);
      setText(
        row.memory,
        p.used_memory === null ? '?' : bytes(p.used_memory, this._trans)
      );
    });
  }

  private _none = el(
    'p',
    undefined,
    this._trans.__('No GPU processes of yours.')
  );
  private _table = el('table');
  private _body = el('tbody');
  private _rows = new Map<
    number,
    { tr: HTMLElement; command: HTMLElement; memory: HTMLElement }
  >();
}

class GpuCard {
  readonly node = el('section', 'jp-gpuspawn-card jp-gpuspawn-gpu');
  readonly mig: boolean;

  constructor(
    gpu: IGPU,
    private _trans: Trans
  ) {
    this.mig = Boolean(gpu.mig_profile);
    this.node.dataset.uuid = gpu.uuid;
    const trans = _trans;
    this._badge.hidden = true;
    const title = el('h3');
    title.append(this._title, this._badge);
    const f = this._fields;
    f.add('uuid', trans.__('UUID'));
    f.add('utilization', trans.__('Utilisation'));
    f.add('mig', trans.__('MIG slice'));
    f.add('gpu-memory', trans.__('Memory'));
    f.add('temperature', trans.__('Temperature'));
    f.add('power', trans.__('Power'));
    f.add('cc', trans.__('Compute capability'));
    f.add('others', trans.__('Other processes'));
    const lines = el('div', 'jp-gpuspawn-sparklines');
    if (!this.mig) {
      // a MIG slice has no utilisation figures: a flat line would be a wrong one
      this._utilization = new Sparkline(
        trans.__('GPU utilisation, last minutes')
      );
      lines.append(
        el('span', undefined, trans.__('utilisation')),
        this._utilization.node
      );
    }
    lines.append(el('span', undefined, trans.__('memory')), this._memory.node);
    this.node.append(title, f.node, lines, this._processes.node);
  }

  update(gpu: IGPU, history: IHistory): void {
    const trans = this._trans;
    const f = this._fields;
    setText(
      this._title,
      trans.__('GPU %1: %2', gpu.index ?? '?', gpu.name ?? trans.__('unknown'))
    );
    setHidden(this._badge, !gpu.simulated);
    setAttr(
      this._badge,
      'title',
      gpu.demo_figures?.length
        ? trans.__('A simulated GPU (demo mode): its figures are made up.')
        : trans.__('A simulated GPU (demo mode).')
    );
    f.set('uuid', gpu.uuid, 'jp-gpuspawn-uuid');
    f.set('utilization', utilization(gpu, trans));
    f.set(
      'mig',
      gpu.mig_profile
        ? trans.__(
            '%1 of %2',
            gpu.mig_profile,
            shortUuid(gpu.parent_uuid ?? '?')
          )
        : null
    );
    f.set('gpu-memory', bytesPair(gpu.memory_used, gpu.memory_total, trans));
    f.set('temperature', temperature(gpu.temperature_c, trans));
    f.set(
      'power',
      gpu.power_w === null || gpu.power_w === undefined
        ? null
        : power(gpu.power_w, trans)
    );
    f.set('cc', gpu.compute_capability || null);
    const others = gpu.other_processes ?? 0;
    // on a shared GPU: other users' processes are counted, never shown
    f.set(
      'others',
      others > 0 ? trans._n('%1 (not yours)', '%1 (not yours)', others) : null
    );
    this._utilization?.update(history.utilization);
    this._memory.update(history.memory);
    this._processes.update(gpu.processes);
  }

  private _title = el('span');
  private _badge = el('span', 'jp-gpuspawn-badge', this._trans.__('simulated'));
  private _fields = new Fields();
  private _utilization: Sparkline | null = null;
  private _memory = new Sparkline(this._trans.__('GPU memory, last minutes'));
  private _processes = new ProcessTable(this._trans);
}

export class ContainerPanel extends StatusView {
  constructor(model: StatusModel, trans: Trans = plainTrans) {
    super(model, trans);
    this.id = 'jp-gpuspawn-panel';
    this.addClass('jp-gpuspawn-panel');
    this.title.caption = trans.__('My container');
    this._heading = el('h2', 'jp-gpuspawn-heading', trans.__('My container'));
    this._settingsNote = el('p', 'jp-gpuspawn-settings-error');
    this._error = el('p', 'jp-gpuspawn-error');
    this._loading = el('p', 'jp-gpuspawn-loading', trans.__('Loading…'));
    this._container = new ContainerCard(trans);
    this._cpuOnly = el(
      'p',
      'jp-gpuspawn-cpu-only',
      trans.__('CPU only: no GPU is assigned to this server.')
    );
    this._gpus = el('div', 'jp-gpuspawn-gpus');
    this._errors = el('ul', 'jp-gpuspawn-errors');
    for (const node of [
      this._settingsNote,
      this._error,
      this._container.node,
      this._cpuOnly,
      this._errors
    ]) {
      node.hidden = true;
    }
    this._body.append(
      this._container.node,
      this._cpuOnly,
      this._gpus,
      this._errors
    );
    this.node.append(
      this._heading,
      this._settingsNote,
      this._error,
      this._loading,
      this._body
    );
    this.render();
  }

  /** Say in the panel that the settings could not be loaded (and that the defaults are in use). */
  showSettingsError(reason: string): void {
    setText(
      this._settingsNote,
      this.trans.__(
        'Your settings for this panel could not be loaded (%1). It uses the defaults: a refresh every %2 s, %3 min of history.',
        reason,
        DEFAULT_SETTINGS.refreshInterval,
        DEFAULT_SETTINGS.historyMinutes
      )
    );
    setHidden(this._settingsNote, false);
  }

  protected render(): void {
    const trans = this.trans;
    const status = this.model.status;
    this._renderReclaim();
    const error = this.model.error;
    setHidden(this._error, error === null);
    if (error !== null) {
      setText(this._error, trans.__('Status unavailable: %1', error));
    }
    // the last figures stay, greyed, while the endpoint does not answer
    this._body.classList.toggle('jp-gpuspawn-stale', error !== null);
    setHidden(this._loading, status !== null || error !== null);
    if (!status) {
      return;
    }
    setHidden(this._container.node, false);
    this._container.update(status.container ?? {}, this.model.limitWarnings());
    setHidden(this._cpuOnly, status.gpus.length > 0);
    this._renderGpus(status.gpus);
    this._renderErrors(status.errors ?? []);
  }

  private _renderGpus(gpus: IGPU[]): void {
    const wanted = new Set(gpus.map(g => g.uuid));
    for (const [uuid, card] of this._cards) {
      const gpu = gpus.find(g => g.uuid === uuid);
      // a card is rebuilt only when its sections change (a whole GPU became a MIG slice: not in practice)
      if (!wanted.has(uuid) || !gpu || card.mig !== Boolean(gpu.mig_profile)) {
        card.node.remove();
        this._cards.delete(uuid);
      }
    }
    gpus.forEach((gpu, i) => {
      let card = this._cards.get(gpu.uuid);
      if (!card) {
        card = new GpuCard(gpu, this.trans);
        this._cards.set(gpu.uuid, card);
      }
      if (this._gpus.children[i] !== card.node) {
        this._gpus.insertBefore(card.node, this._gpus.children[i] ?? null);
      }
      card.update(gpu, this.model.history(gpu.uuid));
    });
  }

  private _renderErrors(messages: string[]): void {
    setHidden(this._errors, messages.length === 0);
    while (this._errors.children.length > messages.length) {
      this._errors.lastElementChild!.remove();
    }
    messages.forEach((message, i) => {
      const item =
        this._errors.children[i] ?? this._errors.appendChild(el('li'));
      setText(item, message);
    });
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
      this._reclaim = new ReclaimNotice(this.trans);
      this._heading.after(this._reclaim.node);
    }
    this._reclaim.update(reclaim, secondsLeft);
  }

  private _heading: HTMLElement;
  private _settingsNote: HTMLElement;
  private _error: HTMLElement;
  private _loading: HTMLElement;
  private _body = el('div', 'jp-gpuspawn-body');
  private _container: ContainerCard;
  private _cpuOnly: HTMLElement;
  private _gpus: HTMLElement;
  private _errors: HTMLElement;
  private _cards = new Map<string, GpuCard>();
  private _reclaim: ReclaimNotice | null = null;
}
