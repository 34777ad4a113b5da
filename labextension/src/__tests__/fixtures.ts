// Shared test data: status documents as the server extension sends them, and a model fed by hand.
import { IGPU, IStatus, StatusModel } from '../model';

export const GIB = 1024 ** 3;
export const UUID_A = 'GPU-00000000-5eed-4a11-9b00-0123456789ab';
export const UUID_B = 'GPU-00000001-5eed-4a11-9b00-0123456789ab';

export function gpu(overrides: Partial<IGPU> = {}): IGPU {
  return {
    uuid: UUID_A,
    index: 0,
    name: 'NVIDIA A100 80GB PCIe',
    utilization_pct: 37,
    memory_used: 12 * GIB,
    memory_total: 80 * GIB,
    temperature_c: 55,
    power_w: null,
    compute_capability: '8.0',
    processes: [],
    simulated: false,
    ...overrides
  };
}

export function status(overrides: Partial<IStatus> = {}): IStatus {
  return {
    container: {
      image: 'local/gpuspawn-singleuser:latest',
      course: 'deep-learning',
      container_id: '0123456789ab',
      memory_used: 0.25 * GIB,
      memory_limit: 1 * GIB,
      cpu_used: 0.5,
      cpu_limit: 2,
      pids: 12,
      pids_limit: 512,
      shm_used: 0,
      shm_size: 64 * 1024 ** 2,
      uptime_seconds: 125
    },
    gpus: [gpu()],
    reclaim: null,
    errors: [],
    ...overrides
  };
}

/**
 * A model that does not poll by itself: each next() answers with the given status (or fails with an Error), then
 * runs one update, as the Poll would.
 */
export class FedModel {
  readonly answers: (IStatus | Error)[] = [];
  clock = 1_000_000;
  readonly model: StatusModel;

  constructor(interval = 2, historyMinutes = 5) {
    this.model = new StatusModel({
      fetch: async () => {
        const answer = this.answers.shift();
        if (answer === undefined) {
          throw new Error('no answer queued');
        }
        if (answer instanceof Error) {
          throw answer;
        }
        return answer;
      },
      interval,
      historyMinutes,
      auto: false,
      now: () => this.clock
    });
  }

  /** One poll answered with `answer`; resolves whether it succeeded or not. */
  async next(answer: IStatus | Error): Promise<void> {
    this.answers.push(answer);
    await this.model.update().catch(() => undefined);
  }
}
