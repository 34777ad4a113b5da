// The status-bar item: "GPU 0: 37% · 12.1/80 GB · RAM 3.2/16 GB", or "CPU only · RAM …".
import { bytesPair } from './format';
import { StatusModel } from './model';
import { StatusView } from './view';

export class StatusBarItem extends StatusView {
  constructor(model: StatusModel, onClick: () => void) {
    super(model);
    this.addClass('jp-gpuspawn-statusbar');
    this.node.title = 'My container and GPUs (click for details)';
    this.node.addEventListener('click', onClick);
    this.render();
  }

  protected render(): void {
    const status = this.model.status;
    if (!status) {
      this.node.textContent = this.model.error ? 'GPU status unavailable' : 'GPU …';
      return;
    }
    const parts: string[] = [];
    if (status.gpus.length === 0) {
      parts.push('CPU only');
    }
    for (const gpu of status.gpus) {
      const util = gpu.utilization_pct === null ? '?' : `${gpu.utilization_pct}%`;
      const label = gpu.index === null ? 'GPU' : `GPU ${gpu.index}`;
      parts.push(`${label}: ${util} · ${bytesPair(gpu.memory_used, gpu.memory_total)}`);
    }
    const c = status.container;
    parts.push(`RAM ${bytesPair(c.memory_used, c.memory_limit)}`);
    this.node.textContent = parts.join(' · ');
  }
}
