// A widget that re-renders whenever the status model changes.
import { Widget } from '@lumino/widgets';
import { StatusModel } from './model';

export abstract class StatusView extends Widget {
  constructor(model: StatusModel) {
    super();
    this.model = model;
    model.changed.connect(this.render, this);
  }

  dispose(): void {
    this.model.changed.disconnect(this.render, this);
    super.dispose();
  }

  protected abstract render(): void;

  protected readonly model: StatusModel;
}
