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
  return uuid.startsWith('GPU-') ? uuid.slice(0, 12) : uuid.slice(0, 8);
}
