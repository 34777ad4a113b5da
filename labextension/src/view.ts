// A widget that updates itself whenever the status model changes.
import { Widget } from '@lumino/widgets';
import { StatusModel } from './model';
import { plainTrans, Trans } from './trans';

export abstract class StatusView extends Widget {
  constructor(model: StatusModel, trans: Trans = plainTrans) {
    super();
    this.model = model;
    this.trans = trans;
    model.changed.connect(this.render, this);
  }

  dispose(): void {
    this.model.changed.disconnect(this.render, this);
    super.dispose();
  }

  protected abstract render(): void;

  protected readonly model: StatusModel;
  protected readonly trans: Trans;
}
