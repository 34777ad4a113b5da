// The status-bar item: "GPU 0: 37% · 12.1/80 GB · RAM 3.2/16 GB", or "CPU only · RAM …".
// While the hub warns that it will stop this server, the warning comes first: "⚠ GPU idle: server stops in 8 min".
import { bytesPair, countdown, utilization } from './format';
import { IReclaim, StatusModel } from './model';
import { StatusView } from './view';

const TITLE = 'My container and GPUs (click for details)';
const WARNING_CLASS = 'jp-gpuspawn-statusbar-warning';

// A few words for the status bar; the hub's message (the tooltip and the panel) says the rest.
function reclaimWhy(reclaim: IReclaim): string {
  switch (reclaim.reason) {
    case 'idle':
      return 'GPU idle: server';
    case 'budget':
      return 'GPU time used up: server';
    default:
      return 'Server';
  }
}

export class StatusBarItem extends StatusView {
  constructor(model: StatusModel, onClick: () => void) {
    super(model);
    this.addClass('jp-gpuspawn-statusbar');
    this.node.title = TITLE;
    this.node.addEventListener('click', onClick);
    this.render();
  }

  protected render(): void {
    const status = this.model.status;
    const secondsLeft = this.model.reclaimSecondsLeft();
    const reclaim = secondsLeft === null ? null : status?.reclaim ?? null;
    this.toggleClass(WARNING_CLASS, reclaim !== null);
    this.node.title = reclaim
      ? reclaim.message || 'The hub will stop this server soon (click for details)'
      : TITLE;
    if (!status) {
      this.node.textContent = this.model.error ? 'GPU status unavailable' : 'GPU …';
      return;
    }
    const parts: string[] = [];
    if (reclaim && secondsLeft !== null) {
      parts.push(`⚠ ${reclaimWhy(reclaim)} stops in ${countdown(secondsLeft, true)}`);
    }
    if (status.gpus.length === 0) {
      parts.push('CPU only');
    }
    for (const gpu of status.gpus) {
      const label = gpu.index === null ? 'GPU' : `GPU ${gpu.index}`;
      const memory = bytesPair(gpu.memory_used, gpu.memory_total);
      parts.push(
        gpu.mig_profile
          ? `${label} MIG ${gpu.mig_profile}: ${memory}`
          : `${label}: ${utilization(gpu)} · ${memory}`
      );
    }
    const c = status.container;
    parts.push(`RAM ${bytesPair(c.memory_used, c.memory_limit)}`);
    this.node.textContent = parts.join(' · ');
  }
}
