// The status-bar item: "GPU 0: 37% · 12/80 GB · RAM 3.2/16 GB", or "CPU only · RAM …". While the hub warns that
// it will stop this server, the warning comes first: "⚠ GPU idle: server stops in 8 min".
//
// As jupyter-resource-usage's status item: shown only once the status endpoint has answered (isActive and
// activeStateChanged, wired in index.ts); a class and a background when a limit is near (and when the hub will
// stop the server); the title says what the figures are. Greyed (jp-gpuspawn-statusbar-inactive) while the
// endpoint does not answer, the last figures kept.
import { el, setAttr, setText } from './dom';
import { bytesPair, countdown, utilization } from './format';
import { IReclaim, IStatus, StatusModel } from './model';
import { Trans, plainTrans } from './trans';
import { StatusView } from './view';

export const WARNING_CLASS = 'jp-gpuspawn-statusbar-warning';
export const NEAR_LIMIT_CLASS = 'jp-gpuspawn-statusbar-near-limit';
export const INACTIVE_CLASS = 'jp-gpuspawn-statusbar-inactive';

// A few words for the status bar; the hub's message (the tooltip and the panel) says the rest.
function reclaimText(
  reclaim: IReclaim,
  secondsLeft: number,
  trans: Trans
): string {
  const left = countdown(secondsLeft, trans, true);
  switch (reclaim.reason) {
    case 'idle':
      return trans.__('⚠ GPU idle: server stops in %1', left);
    case 'budget':
      return trans.__('⚠ GPU time used up: server stops in %1', left);
    default:
      return trans.__('⚠ Server stops in %1', left);
  }
}

/** The item's text for `status`; `secondsLeft` is the reclaim countdown (null without a warning). */
export function statusBarText(
  status: IStatus,
  secondsLeft: number | null,
  trans: Trans
): string {
  const parts: string[] = [];
  if (status.reclaim && secondsLeft !== null) {
    parts.push(reclaimText(status.reclaim, secondsLeft, trans));
  }
  if (status.gpus.length === 0) {
    parts.push(trans.__('CPU only'));
  }
  for (const gpu of status.gpus) {
    const label =
      gpu.index === null ? trans.__('GPU') : trans.__('GPU %1', gpu.index);
    const memory = bytesPair(gpu.memory_used, gpu.memory_total, trans);
    parts.push(
      gpu.mig_profile
        ? trans.__('%1 MIG %2: %3', label, gpu.mig_profile, memory)
        : trans.__('%1: %2 · %3', label, utilization(gpu, trans), memory)
    );
  }
  const c = status.container ?? {};
  parts.push(
    trans.__('RAM %1', bytesPair(c.memory_used, c.memory_limit, trans))
  );
  return parts.join(' · ');
}

export class StatusBarItem extends StatusView {
  constructor(
    model: StatusModel,
    onClick: () => void,
    trans: Trans = plainTrans
  ) {
    super(model, trans);
    this.addClass('jp-gpuspawn-statusbar');
    this.addClass('jp-mod-highlighted'); // JupyterLab's hover look for clickable items
    this.node.setAttribute('role', 'button');
    this.node.tabIndex = 0;
    this.node.addEventListener('click', onClick);
    this.node.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        onClick();
      }
    });
    this.node.appendChild(this._text);
    this.render();
  }

  protected render(): void {
    const trans = this.trans;
    const status = this.model.status;
    const secondsLeft = this.model.reclaimSecondsLeft();
    const reclaim = secondsLeft === null ? null : (status?.reclaim ?? null);
    const warnings = this.model.limitWarnings();
    this.toggleClass(WARNING_CLASS, reclaim !== null);
    this.toggleClass(NEAR_LIMIT_CLASS, warnings.length > 0);
    this.toggleClass(INACTIVE_CLASS, !this.model.available);
    const titles: string[] = [];
    if (reclaim) {
      titles.push(
        reclaim.message || trans.__('The hub will stop this server soon.')
      );
    }
    for (const w of warnings) {
      if (w.key === 'memory') {
        titles.push(
          trans.__(
            'Memory is nearly full: the kernel may be stopped when it runs out.'
          )
        );
      } else if (w.key === 'shm') {
        titles.push(trans.__('Shared memory (/dev/shm) is nearly full.'));
      } else {
        titles.push(
          trans.__('Nearly as many processes as this server may run.')
        );
      }
    }
    if (this.model.error !== null) {
      titles.push(trans.__('GPU status unavailable: %1', this.model.error));
    }
    titles.push(trans.__('My container and GPUs (click for details)'));
    setAttr(this.node, 'title', titles.join('\n'));
    if (!status) {
      setText(
        this._text,
        this.model.error === null
          ? trans.__('GPU …')
          : trans.__('GPU status unavailable')
      );
      return;
    }
    setText(this._text, statusBarText(status, secondsLeft, trans));
  }

  private _text = el('span', 'jp-StatusBar-TextItem');
}
