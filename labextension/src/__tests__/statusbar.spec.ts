import {
  INACTIVE_CLASS,
  NEAR_LIMIT_CLASS,
  StatusBarItem,
  WARNING_CLASS,
  statusBarText
} from '../statusbar';
import { plainTrans } from '../trans';
import { FedModel, GIB, gpu, status } from './fixtures';

describe('statusBarText', () => {
  it('shows each GPU, then the container memory', () => {
    expect(statusBarText(status(), null, plainTrans)).toBe(
      'GPU 0: 37% · 12/80 GB · RAM 0.3/1.0 GB'
    );
  });

  it('names a MIG slice by its profile, without a utilisation', () => {
    const slice = gpu({
      utilization_pct: null,
      mig_profile: '1g.10gb',
      memory_used: GIB / 2,
      memory_total: 10 * GIB
    });
    expect(statusBarText(status({ gpus: [slice] }), null, plainTrans)).toBe(
      'GPU 0 MIG 1g.10gb: 0.5/10 GB · RAM 0.3/1.0 GB'
    );
  });

  it('says CPU only, and puts the hub’s warning first', () => {
    const reclaim = {
      deadline: 0,
      seconds_left: 480,
      reason: 'idle',
      message: null,
      idle_since: null,
      waiting: 1
    };
    expect(statusBarText(status({ gpus: [], reclaim }), 480, plainTrans)).toBe(
      '⚠ GPU idle: server stops in 8 min · CPU only · RAM 0.3/1.0 GB'
    );
  });
});

describe('StatusBarItem', () => {
  let fed: FedModel;
  let item: StatusBarItem;
  const onClick = jest.fn();
  beforeEach(() => {
    fed = new FedModel();
    item = new StatusBarItem(fed.model, onClick);
  });
  afterEach(() => {
    item.dispose();
    fed.model.dispose();
    onClick.mockReset();
  });

  it('follows JupyterLab’s text-item look and is a button', () => {
    expect(item.node.querySelector('.jp-StatusBar-TextItem')).not.toBeNull();
    expect(item.node.getAttribute('role')).toBe('button');
    item.node.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' }));
    item.node.click();
    expect(onClick).toHaveBeenCalledTimes(2);
  });

  it('updates its text node in place', async () => {
    await fed.next(status());
    const text = item.node.querySelector('.jp-StatusBar-TextItem')!.firstChild;
    await fed.next(status({ gpus: [gpu({ utilization_pct: 90 })] }));
    expect(item.node.querySelector('.jp-StatusBar-TextItem')!.firstChild).toBe(
      text
    );
    expect(text!.textContent).toMatch(/^GPU 0: 90%/);
  });

  it('is inactive (greyed, with the reason in its title) while the endpoint does not answer', async () => {
    await fed.next(status());
    expect(item.hasClass(INACTIVE_CLASS)).toBe(false);
    await fed.next(new Error('the status endpoint answered 503'));
    expect(item.hasClass(INACTIVE_CLASS)).toBe(true);
    expect(item.node.title).toContain(
      'GPU status unavailable: the status endpoint answered 503'
    );
    expect(item.node.textContent).toMatch(/^GPU 0: 37%/); // the last figures stay
    await fed.next(status());
    expect(item.hasClass(INACTIVE_CLASS)).toBe(false);
  });

  it('warns when memory is nearly full, as jupyter-resource-usage does', async () => {
    await fed.next(status());
    expect(item.hasClass(NEAR_LIMIT_CLASS)).toBe(false);
    await fed.next(
      status({ container: { ...status().container, memory_used: 0.95 * GIB } })
    );
    expect(item.hasClass(NEAR_LIMIT_CLASS)).toBe(true);
    expect(item.node.title).toMatch(/^Memory is nearly full/);
  });

  it('warns before the hub stops the server, with the hub’s words as its title', async () => {
    const reclaim = {
      deadline: 0,
      seconds_left: 300,
      reason: 'idle',
      message: 'Your GPU has been idle (under 5 % utilisation).',
      idle_since: null,
      waiting: 1
    };
    await fed.next(status({ reclaim }));
    expect(item.hasClass(WARNING_CLASS)).toBe(true);
    expect(item.node.title.split('\n')[0]).toBe(reclaim.message);
    await fed.next(status());
    expect(item.hasClass(WARNING_CLASS)).toBe(false);
  });
});
