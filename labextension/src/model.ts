// Polls {baseUrl}gpuspawn/status (through the `fetch` it is given: see request.ts) and keeps a short history for
// the sparklines. Nothing here touches the DOM or JupyterLab's services, so jest tests it with a fake fetch.
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

export interface IGPUProcess {
  pid: number;
  used_memory: number | null;
  command: string | null;
}

export interface IGPU {
  uuid: string;
  index: number | null;
  name: string | null;
  utilization_pct: number | null;
  memory_used: number | null;
  memory_total: number | null;
  temperature_c: number | null;
  power_w: number | null;
  compute_capability: string | null;
  mig_profile?: string | null; // a MIG slice ("1g.10gb"); null or absent for a whole GPU
  parent_uuid?: string | null;
  processes: IGPUProcess[];
  other_processes?: number;
  simulated?: boolean;
  // demo mode: the figures the server made up for a simulated GPU ("utilization_pct", "temperature_c", …)
  demo_figures?: string[];
}

export interface IContainer {
  image?: string | null;
  course?: string | null;
  user?: string | null;
  container_id?: string | null;
  hostname?: string | null;
  uptime_seconds?: number | null;
  memory_limit?: number | null;
  memory_used?: number | null;
  cpu_limit?: number | null;
  cpu_used?: number | null;
  pids?: number | null;
  pids_limit?: number | null;
  shm_size?: number | null;
  shm_used?: number | null;
}

// The hub's warning that it will stop this server (from its notice file, see jupyter_gpuspawn/status/notice.py).
export interface IReclaim {
  deadline: number; // Unix epoch seconds, by the server's clock
  seconds_left: number; // deadline minus the server's clock at collection, never negative
  reason: string | null; // 'idle' today, 'budget' later; anything else reads as a plain warning
  message: string | null; // the hub's words for the student: plain text, never HTML
  idle_since: number | null;
  waiting: number | null;
}

export interface IStatus {
  container: IContainer;
  gpus: IGPU[];
  reclaim?: IReclaim | null; // absent from an older server extension
  errors: string[];
  collected_at?: number;
}

export interface IHistory {
  utilization: (number | null)[]; // percent; null where the GPU reported none (a gap in the sparkline)
  memory: (number | null)[]; // percent of the GPU's memory
}

/** A container limit that is nearly reached: what the status bar and the panel warn about. */
export interface ILimitWarning {
  key: 'memory' | 'shm' | 'pids';
  used: number;
  limit: number;
}

/**
 * The limits this server is close to: less than `threshold` (a fraction) of the limit left, as
 * jupyter-resource-usage decides its warnings (its mem_warning_threshold, 0.1 by default). Only the limits whose
 * end kills work: memory (the kernel is OOM-killed), shared memory (DataLoader workers crash) and processes. A full
 * GPU memory is not among them: frameworks reserve most of it on purpose.
 */
export function limitWarnings(
  status: IStatus | null,
  threshold = 0.1
): ILimitWarning[] {
  const c = status?.container;
  if (!c) {
    return [];
  }
  const pairs: [
    ILimitWarning['key'],
    number | null | undefined,
    number | null | undefined
  ][] = [
    ['memory', c.memory_used, c.memory_limit],
    ['shm', c.shm_used, c.shm_size],
    ['pids', c.pids, c.pids_limit]
  ];
  const out: ILimitWarning[] = [];
  for (const [key, used, limit] of pairs) {
    if (typeof used === 'number' && typeof limit === 'number' && limit > 0) {
      if (limit - used < limit * threshold) {
        out.push({ key, used, limit });
      }
    }
  }
  return out;
}

/** How many samples a sparkline keeps: historyMinutes of polls, at least 2 (a line needs two points). */
export function historyLength(
  historyMinutes: number,
  intervalMs: number
): number {
  return Math.max(
    2,
    Math.round((historyMinutes * 60 * 1000) / Math.max(1, intervalMs))
  );
}

export namespace StatusModel {
  export interface IOptions {
    /** One request to the status endpoint; rejects when it cannot answer. */
    fetch: () => Promise<IStatus>;
    /** Seconds between polls (at least 1). */
    interval: number;
    /** Minutes of history for the sparklines. */
    historyMinutes: number;
    /** Start polling at once (default true); tests call update() themselves. */
    auto?: boolean;
    /** The clock, in milliseconds (default Date.now). */
    now?: () => number;
  }
}

export class StatusModel {
  constructor(options: StatusModel.IOptions) {
    this._fetch = options.fetch;
    this._now = options.now ?? Date.now;
    this._historyMinutes = options.historyMinutes;
    this._poll = new Poll({
      auto: options.auto ?? true,
      factory: () => this.update(),
      frequency: {
        interval: this._ms(options.interval),
        backoff: true,
        max: 60 * 1000
      },
      standby: 'when-hidden',
      name: 'jupyter-gpuspawn:status'
    });
  }

  /** Emitted after every poll, answered or not. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }
  /** Emitted when `active` or `available` flips: the status bar's activeStateChanged. */
  get stateChanged(): ISignal<this, void> {
    return this._stateChanged;
  }
  /** The latest answer (kept while later polls fail), null before the first. */
  get status(): IStatus | null {
    return this._status;
  }
  /** Why the latest poll failed (the reason's own words, untranslated), null when it was answered. */
  get error(): string | null {
    return this._error;
  }
  /** Whether the latest poll was answered. */
  get available(): boolean {
    return this._status !== null && this._error === null;
  }
  /**
   * Whether the status endpoint has ever answered: a JupyterLab without jupyter-gpuspawn's server extension shows
   * no status item, as jupyter-resource-usage shows none without its metrics.
   */
  get active(): boolean {
    return this._status !== null;
  }
  get historyMinutes(): number {
    return this._historyMinutes;
  }
  get intervalMs(): number {
    return this._poll.frequency.interval;
  }

  /**
   * Seconds until the hub stops this server, or null without a warning. Counted from the server's seconds_left
   * and the time the answer arrived, not from deadline - Date.now(): the browser's clock may be minutes off the
   * server's, and a student must not be told "10 min" when the hub stops the server in 2.
   */
  reclaimSecondsLeft(): number | null {
    const reclaim = this._status?.reclaim;
    if (!reclaim || typeof reclaim.seconds_left !== 'number') {
      return null;
    }
    return Math.max(
      0,
      reclaim.seconds_left - (this._now() - this._receivedAt) / 1000
    );
  }

  history(uuid: string): IHistory {
    return this._history.get(uuid) ?? { utilization: [], memory: [] };
  }

  limitWarnings(threshold = 0.1): ILimitWarning[] {
    return limitWarnings(this._status, threshold);
  }

  configure(intervalSeconds: number, historyMinutes: number): void {
    this._historyMinutes = historyMinutes;
    const interval = this._ms(intervalSeconds);
    if (interval !== this._poll.frequency.interval) {
      this._poll.frequency = { ...this._poll.frequency, interval };
    }
  }

  /** Poll now; resolves once that poll is done. */
  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** One poll: fetch, record, tell the views. Rejects when the fetch fails, so that the Poll backs off. */
  async update(): Promise<void> {
    const wasActive = this.active;
    const wasAvailable = this.available;
    try {
      const status = await this._fetch();
      this._status = status;
      this._receivedAt = this._now();
      this._error = null;
      this._record(status);
    } catch (reason) {
      this._error = reason instanceof Error ? reason.message : String(reason);
      this._emit(wasActive, wasAvailable);
      throw reason;
    }
    this._emit(wasActive, wasAvailable);
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _emit(wasActive: boolean, wasAvailable: boolean): void {
    if (wasActive !== this.active || wasAvailable !== this.available) {
      this._stateChanged.emit();
    }
    this._changed.emit();
  }

  private _ms(seconds: number): number {
    return (
      Math.max(1, Number.isFinite(seconds) && seconds > 0 ? seconds : 2) * 1000
    );
  }

  private _record(status: IStatus): void {
    const keep = historyLength(
      this._historyMinutes,
      this._poll.frequency.interval
    );
    const present = new Set<string>();
    for (const gpu of status.gpus) {
      present.add(gpu.uuid);
      const entry = this._history.get(gpu.uuid) ?? {
        utilization: [],
        memory: []
      };
      entry.utilization.push(gpu.utilization_pct ?? null);
      const total = gpu.memory_total;
      entry.memory.push(
        total && gpu.memory_used !== null
          ? (100 * gpu.memory_used) / total
          : null
      );
      entry.utilization.splice(0, Math.max(0, entry.utilization.length - keep));
      entry.memory.splice(0, Math.max(0, entry.memory.length - keep));
      this._history.set(gpu.uuid, entry);
    }
    // a GPU that left this server takes its history along (it may come back to someone else)
    for (const uuid of [...this._history.keys()]) {
      if (!present.has(uuid)) {
        this._history.delete(uuid);
      }
    }
  }

  private _fetch: () => Promise<IStatus>;
  private _now: () => number;
  private _poll: Poll;
  private _status: IStatus | null = null;
  private _receivedAt = 0; // this._now() when _status arrived
  private _error: string | null = null;
  private _historyMinutes: number;
  private _history = new Map<string, IHistory>();
  private _changed = new Signal<this, void>(this);
  private _stateChanged = new Signal<this, void>(this);
}
