// Human-readable figures for the status bar and the panel.
export function gb(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) {
    return '?';
  }
  const value = bytes / 1024 ** 3;
  return value >= 10 ? value.toFixed(0) : value.toFixed(1);
}

export function bytesPair(used: number | null | undefined, total: number | null | undefined): string {
  if (total === null || total === undefined) {
    return `${gb(used)} GB (no limit)`;
  }
  return `${gb(used)}/${gb(total)} GB`;
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '?';
  }
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) {
    return `${d}d ${h}h`;
  }
  if (h) {
    return `${h}h ${m}m`;
  }
  return `${m}m ${s % 60}s`;
}

export function shortUuid(uuid: string): string {
  return uuid.slice(0, 12);
}

// NVML has no utilisation per MIG slice: say so rather than show a figure (or a "?" that reads as broken).
export function utilization(gpu: { utilization_pct: number | null; mig_profile?: string | null }): string {
  if (gpu.utilization_pct !== null) {
    return `${gpu.utilization_pct}%`;
  }
  return gpu.mig_profile ? 'n/a (MIG)' : '?';
}

// Time left before the hub stops this server: "8 min", "1 h 5 min", "less than a minute" ("<1 min" when short).
// Whole minutes rounded down: a warning may say a little less time than there is, never more.
export function countdown(secondsLeft: number, short = false): string {
  const minutes = Number.isFinite(secondsLeft) ? Math.floor(Math.max(0, secondsLeft) / 60) : 0;
  if (minutes < 1) {
    return short ? '<1 min' : 'less than a minute';
  }
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  if (!h) {
    return `${m} min`;
  }
  return m ? `${h} h ${m} min` : `${h} h`;
}

// The local wall-clock time secondsFromNow ahead, hours and minutes in the browser's locale ("14:32", "2:32 PM").
export function clockTime(secondsFromNow: number): string {
  const at = new Date(Date.now() + Math.max(0, secondsFromNow) * 1000);
  return at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
