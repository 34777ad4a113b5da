// Human-readable figures for the status bar and the panel. Every word goes through `trans` (see trans.ts).
import type { Trans } from './trans';

type Maybe<T> = T | null | undefined;

function known<T>(value: Maybe<T>): value is T {
  return value !== null && value !== undefined;
}

/** Bytes as GB with one decimal below 10 GB, none above ("0.5", "12", "80"); "?" when unknown. */
export function gb(bytes: Maybe<number>): string {
  if (!known(bytes)) {
    return '?';
  }
  const value = bytes / 1024 ** 3;
  return value >= 10 ? value.toFixed(0) : value.toFixed(1);
}

export function bytesPair(
  used: Maybe<number>,
  total: Maybe<number>,
  trans: Trans
): string {
  if (!known(total)) {
    return trans.__('%1 GB (no limit)', gb(used));
  }
  return trans.__('%1/%2 GB', gb(used), gb(total));
}

export function bytes(value: Maybe<number>, trans: Trans): string {
  return trans.__('%1 GB', gb(value));
}

/** "0.25 of 2 cores"; "0.25 cores (no limit)" without a limit. */
export function cores(
  used: Maybe<number>,
  limit: Maybe<number>,
  trans: Trans
): string {
  const value = known(used) ? used.toFixed(2) : '?';
  if (!known(limit)) {
    return trans.__('%1 cores (no limit)', value);
  }
  return trans._n('%2 of %1 core', '%2 of %1 cores', limit, value);
}

/** "12 of 512"; "12 (no limit)". */
export function count(
  value: Maybe<number>,
  limit: Maybe<number>,
  trans: Trans
): string {
  const shown = known(value) ? String(value) : '?';
  return known(limit)
    ? trans.__('%1 of %2', shown, limit)
    : trans.__('%1 (no limit)', shown);
}

export function duration(seconds: Maybe<number>, trans: Trans): string {
  if (!known(seconds)) {
    return '?';
  }
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) {
    return trans.__('%1d %2h', d, h);
  }
  if (h) {
    return trans.__('%1h %2m', h, m);
  }
  return trans.__('%1m %2s', m, s % 60);
}

export function shortUuid(uuid: string): string {
  return uuid.slice(0, 12);
}

// NVML has no utilisation per MIG slice: say so rather than show a figure (or a "?" that reads as broken).
export function utilization(
  gpu: { utilization_pct: number | null; mig_profile?: string | null },
  trans: Trans
): string {
  if (known(gpu.utilization_pct)) {
    return trans.__('%1%', gpu.utilization_pct);
  }
  return gpu.mig_profile ? trans.__('n/a (MIG)') : '?';
}

export function temperature(celsius: Maybe<number>, trans: Trans): string {
  return known(celsius) ? trans.__('%1 °C', celsius) : '?';
}

export function power(watts: Maybe<number>, trans: Trans): string {
  return known(watts) ? trans.__('%1 W', watts.toFixed(0)) : '?';
}

/** used as a percentage of total (0-100, not clamped), or null when either is unknown or total is 0. */
export function percent(
  used: Maybe<number>,
  total: Maybe<number>
): number | null {
  if (!known(used) || !known(total) || total <= 0) {
    return null;
  }
  return (100 * used) / total;
}

// Time left before the hub stops this server: "8 min", "1 h 5 min", "less than a minute" ("<1 min" when short).
// Whole minutes rounded down: a warning may say a little less time than there is, never more.
export function countdown(
  secondsLeft: number,
  trans: Trans,
  short = false
): string {
  const minutes = Number.isFinite(secondsLeft)
    ? Math.floor(Math.max(0, secondsLeft) / 60)
    : 0;
  if (minutes < 1) {
    return short ? trans.__('<1 min') : trans.__('less than a minute');
  }
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  if (!h) {
    return trans.__('%1 min', m);
  }
  return m ? trans.__('%1 h %2 min', h, m) : trans.__('%1 h', h);
}

// The local wall-clock time secondsFromNow ahead, hours and minutes in the browser's locale ("14:32", "2:32 PM").
export function clockTime(
  secondsFromNow: number,
  now: number = Date.now()
): string {
  const at = new Date(now + Math.max(0, secondsFromNow) * 1000);
  return at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
