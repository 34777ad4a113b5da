import { DEFAULT_SETTINGS, loadSettings, readValues } from '../settings';

function settingsWith(values: { [key: string]: unknown }) {
  return { get: (key: string) => ({ composite: values[key] }) } as any;
}

describe('loadSettings', () => {
  it('reads the values when the settings load', async () => {
    const registry = {
      load: jest.fn(async () =>
        settingsWith({ refreshInterval: 5, historyMinutes: 10 })
      )
    };
    const loaded = await loadSettings(registry, 'jupyter-gpuspawn:plugin');
    expect(registry.load).toHaveBeenCalledWith('jupyter-gpuspawn:plugin');
    expect(loaded.values).toEqual({ refreshInterval: 5, historyMinutes: 10 });
    expect(loaded.error).toBeNull();
  });

  it('logs a failure, says why, and goes on with the defaults', async () => {
    const logged = jest
      .spyOn(console, 'error')
      .mockImplementation(() => undefined);
    const registry = {
      load: jest.fn(async () => Promise.reject(new Error('Schema not found')))
    };
    const loaded = await loadSettings(registry, 'jupyter-gpuspawn:plugin');
    expect(loaded.error).toBe('Schema not found');
    expect(loaded.values).toEqual(DEFAULT_SETTINGS);
    expect(loaded.settings).toBeNull();
    expect(logged).toHaveBeenCalledTimes(1);
    expect(String(logged.mock.calls[0][0])).toContain(
      'settings could not be loaded'
    );
    logged.mockRestore();
  });

  it('uses the defaults without a settings registry, and says nothing', async () => {
    const loaded = await loadSettings(null, 'jupyter-gpuspawn:plugin');
    expect(loaded).toEqual({
      values: DEFAULT_SETTINGS,
      settings: null,
      error: null
    });
  });

  it('takes the default for a value that is not a positive number', () => {
    expect(
      readValues(settingsWith({ refreshInterval: 'soon', historyMinutes: -1 }))
    ).toEqual(DEFAULT_SETTINGS);
  });
});
