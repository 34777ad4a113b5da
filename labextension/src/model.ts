// Polls {baseUrl}gpuspawn/status and keeps a short history for the sparklines.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
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
  utilization: number[];
  memory: number[];
}

export class StatusModel {
  constructor(intervalSeconds: number, historyMinutes: number) {
    this._settings = ServerConnection.makeSettings();
    this._historyMinutes = historyMinutes;
    this._poll = new Poll({
      factory: () => this._refresh(),
      frequency: { interval: this._ms(intervalSeconds), backoff: true, max: 60 * 1000 },
      standby: 'when-hidden',
      name: 'jupyter-gpuspawn:status'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }
  get status(): IStatus | null {
    return this._status;
  }
  get error(): string | null {
    return this._error;
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
    return Math.max(0, reclaim.seconds_left - (Date.now() - this._receivedAt) / 1000);
  }
  history(uuid: string): IHistory {
    return this._history.get(uuid) ?? { utilization: [], memory: [] };
  }

  configure(intervalSeconds: number, historyMinutes: number): void {
    this._historyMinutes = historyMinutes;
    void this._poll.schedule({
      interval: this._ms(intervalSeconds),
      phase: 'reconnected'
    });
    this._poll.frequency = { ...this._poll.frequency, interval: this._ms(intervalSeconds) };
  }

  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  dispose(): void {
    this._poll.dispose();
  }

  private _ms(seconds: number): number {
    return Math.max(1, seconds || 2) * 1000;
  }

  private async _refresh(): Promise<void> {
    const url = URLExt.join(this._settings.baseUrl, 'gpuspawn', 'status');
    try {
      const response = await ServerConnection.makeRequest(url, {}, this._settings);
      if (!response.ok) {
        throw new Error(`the status endpoint answered ${response.status}`);
      }
      this._status = (await response.json()) as IStatus;
      this._receivedAt = Date.now();
      this._error = null;
      this._record(this._status);
    } catch (reason) {
      this._error = `Status unavailable: ${(reason as Error).message ?? reason}`;
      this._changed.emit();
      throw reason; // lets Poll back off
    }
    this._changed.emit();
  }

  private _record(status: IStatus): void {
    const keep = Math.max(
      2,
      Math.round((this._historyMinutes * 60 * 1000) / (this._poll.frequency.interval || 2000))
    );
    for (const gpu of status.gpus) {
      const entry = this._history.get(gpu.uuid) ?? { utilization: [], memory: [] };
      entry.utilization.push(gpu.utilization_pct ?? 0);
      entry.memory.push(
        gpu.memory_total ? (100 * (gpu.memory_used ?? 0)) / gpu.memory_total : 0
      );
      entry.utilization.splice(0, Math.max(0, entry.utilization.length - keep));
      entry.memory.splice(0, Math.max(0, entry.memory.length - keep));
      this._history.set(gpu.uuid, entry);
    }
  }

  private _settings: ServerConnection.ISettings;
  private _poll: Poll;
  private _status: IStatus | null = null;
  private _receivedAt = 0; // Date.now() when _status arrived
  private _error: string | null = null;
  private _historyMinutes: number;
  private _history = new Map<string, IHistory>();
  private _changed = new Signal<this, void>(this);
}
