import { historyLength, limitWarnings, StatusModel } from '../model';
import { FedModel, GIB, UUID_A, UUID_B, gpu, status } from './fixtures';

describe('StatusModel', () => {
  let fed: FedModel;
  afterEach(() => fed?.model.dispose());

  it('is neither active nor available before the first answer', () => {
    fed = new FedModel();
    expect(fed.model.status).toBeNull();
    expect(fed.model.active).toBe(false);
    expect(fed.model.available).toBe(false);
  });

  it('keeps the answer and signals the change, and the state change once', async () => {
    fed = new FedModel();
    const changed = jest.fn();
    const stateChanged = jest.fn();
    fed.model.changed.connect(changed);
    fed.model.stateChanged.connect(stateChanged);
    await fed.next(status());
    await fed.next(status());
    expect(fed.model.status?.gpus[0].uuid).toBe(UUID_A);
    expect(fed.model.active).toBe(true);
    expect(fed.model.available).toBe(true);
    expect(changed).toHaveBeenCalledTimes(2);
    expect(stateChanged).toHaveBeenCalledTimes(1);
  });

  it('keeps the last figures when a poll fails, and says why', async () => {
    fed = new FedModel();
    const stateChanged = jest.fn();
    fed.model.stateChanged.connect(stateChanged);
    await fed.next(status());
    await expect(
      (async () => {
        fed.answers.push(new Error('the status endpoint answered 502'));
        await fed.model.update();
      })()
    ).rejects.toThrow('502'); // rejected, so that the Poll backs off
    expect(fed.model.error).toBe('the status endpoint answered 502');
    expect(fed.model.available).toBe(false);
    expect(fed.model.active).toBe(true);
    expect(fed.model.status?.container.memory_limit).toBe(GIB);
    expect(stateChanged).toHaveBeenCalledTimes(2); // answered, then failed
    await fed.next(status());
    expect(fed.model.error).toBeNull();
    expect(fed.model.available).toBe(true);
  });

  it('polls through its Poll when asked to refresh', async () => {
    const fetch = jest.fn(async () => status());
    const model = new StatusModel({
      fetch,
      interval: 60,
      historyMinutes: 5,
      auto: false
    });
    await model.refresh();
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(model.status).not.toBeNull();
    model.dispose();
  });

  it('keeps historyMinutes of samples per GPU, gaps where a figure is missing', async () => {
    fed = new FedModel(30, 1); // two samples a minute, one minute: 2 kept
    await fed.next(status({ gpus: [gpu({ utilization_pct: 10 })] }));
    await fed.next(
      status({ gpus: [gpu({ utilization_pct: null, memory_used: 40 * GIB })] })
    );
    await fed.next(
      status({ gpus: [gpu({ utilization_pct: 30, memory_used: 20 * GIB })] })
    );
    const h = fed.model.history(UUID_A);
    expect(h.utilization).toEqual([null, 30]);
    expect(h.memory).toEqual([50, 25]);
  });

  it('forgets the history of a GPU that left this server', async () => {
    fed = new FedModel();
    await fed.next(status({ gpus: [gpu(), gpu({ uuid: UUID_B, index: 1 })] }));
    await fed.next(status({ gpus: [gpu({ uuid: UUID_B, index: 1 })] }));
    expect(fed.model.history(UUID_A).utilization).toEqual([]);
    expect(fed.model.history(UUID_B).utilization).toEqual([37, 37]);
  });

  it('counts the reclaim countdown from the answer, by the browser clock only since then', async () => {
    fed = new FedModel();
    expect(fed.model.reclaimSecondsLeft()).toBeNull();
    const reclaim = {
      deadline: 1, // a server clock far off the browser's: not used
      seconds_left: 600,
      reason: 'idle',
      message: null,
      idle_since: null,
      waiting: 1
    };
    await fed.next(status({ reclaim }));
    expect(fed.model.reclaimSecondsLeft()).toBe(600);
    fed.clock += 30_000;
    expect(fed.model.reclaimSecondsLeft()).toBe(570);
    fed.clock += 3_600_000;
    expect(fed.model.reclaimSecondsLeft()).toBe(0);
  });

  it('changes its interval when configured', async () => {
    fed = new FedModel(2, 5);
    expect(fed.model.intervalMs).toBe(2000);
    fed.model.configure(10, 1);
    expect(fed.model.intervalMs).toBe(10_000);
    expect(fed.model.historyMinutes).toBe(1);
    fed.model.configure(Number.NaN, 1); // a broken setting: the default, not a poll storm
    expect(fed.model.intervalMs).toBe(2000);
  });
});

describe('historyLength', () => {
  it('is historyMinutes of polls, never fewer than 2', () => {
    expect(historyLength(5, 2000)).toBe(150);
    expect(historyLength(1, 60_000)).toBe(2);
    expect(historyLength(0, 2000)).toBe(2);
  });
});

describe('limitWarnings', () => {
  const container = (c: object) =>
    status({ container: { ...status().container, ...c } });

  it('warns when less than a tenth of memory is left, as jupyter-resource-usage does', () => {
    expect(limitWarnings(container({ memory_used: 0.95 * GIB }))).toEqual([
      { key: 'memory', used: 0.95 * GIB, limit: GIB }
    ]);
    expect(limitWarnings(container({ memory_used: 0.85 * GIB }))).toEqual([]);
    expect(
      limitWarnings(container({ memory_used: 0.85 * GIB }), 0.2)
    ).toHaveLength(1);
  });

  it('warns for shared memory and processes, never without a limit', () => {
    const keys = limitWarnings(
      container({ shm_used: 63 * 1024 ** 2, pids: 500, memory_limit: null })
    ).map(w => w.key);
    expect(keys).toEqual(['shm', 'pids']);
    expect(limitWarnings(null)).toEqual([]);
  });

  it('does not warn about a full GPU memory (frameworks reserve it on purpose)', () => {
    expect(
      limitWarnings(status({ gpus: [gpu({ memory_used: 79.9 * GIB })] }))
    ).toEqual([]);
  });
});
