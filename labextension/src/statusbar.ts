// The status-bar item: "GPU 0: 37% · 12.1/80 GB · RAM 3.2/16 GB", or "CPU only · RAM …".
import { Widget } from '@lumino/widgets';
import { bytesPair } from './format';
import { StatusModel } from './model';

export class StatusBarItem extends Widget {
  constructor(model: StatusModel, onClick: () => void) {
    super();
    this._model = model;
    this.addClass('jp-gpuspawn-statusbar');
    this.node.title = 'My container and GPUs (click for details)';
    this.node.addEventListener('click', onClick);
    model.changed.connect(this._update, this);
    this._update();
  }

  dispose(): void {
    this._model.changed.disconnect(this._update, this);
    super.dispose();
  }

  private _update(): void {
    const status = this._model.status;
    if (!status) {
      this.node.textContent = this._model.error ? 'GPU status unavailable' : 'GPU …';
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

  private _model: StatusModel;
}
