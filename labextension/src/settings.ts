// The plugin's settings, read so that a failure is seen: a settings file that cannot be loaded is logged with
// console.error and noted in the panel, and the extension goes on with the defaults instead of failing silently.
import type { ISettingRegistry } from '@jupyterlab/settingregistry';

export interface ISettingValues {
  refreshInterval: number; // seconds
  historyMinutes: number;
}

export const DEFAULT_SETTINGS: ISettingValues = {
  refreshInterval: 2,
  historyMinutes: 5
};

export interface ILoadedSettings {
  values: ISettingValues;
  settings: ISettingRegistry.ISettings | null;
  error: string | null; // why the settings could not be loaded (the defaults are in use), else null
}

function positive(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0
    ? value
    : fallback;
}

export function readValues(
  settings: Pick<ISettingRegistry.ISettings, 'get'>
): ISettingValues {
  return {
    refreshInterval: positive(
      settings.get('refreshInterval').composite,
      DEFAULT_SETTINGS.refreshInterval
    ),
    historyMinutes: positive(
      settings.get('historyMinutes').composite,
      DEFAULT_SETTINGS.historyMinutes
    )
  };
}

export async function loadSettings(
  registry: Pick<ISettingRegistry, 'load'> | null,
  pluginId: string
): Promise<ILoadedSettings> {
  if (!registry) {
    return { values: { ...DEFAULT_SETTINGS }, settings: null, error: null };
  }
  try {
    const settings = await registry.load(pluginId);
    return { values: readValues(settings), settings, error: null };
  } catch (reason) {
    const error = reason instanceof Error ? reason.message : String(reason);
    console.error(
      `${pluginId}: the settings could not be loaded; using the defaults.`,
      reason
    );
    return { values: { ...DEFAULT_SETTINGS }, settings: null, error };
  }
}
