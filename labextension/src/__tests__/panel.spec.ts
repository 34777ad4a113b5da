import { ContainerPanel } from '../panel';
import { strfmt, Trans } from '../trans';
import { FedModel, GIB, UUID_A, UUID_B, gpu, status } from './fixtures';

function value(panel: ContainerPanel, key: string, scope = ''): HTMLElement {
  const node = panel.node.querySelector<HTMLElement>(
    `${scope} dd[data-key="${key}"]`
  );
  if (!node) {
    throw new Error(`no value ${key}`);
  }
  return node;
}

function card(panel: ContainerPanel, uuid: string): HTMLElement | null {
  return panel.node.querySelector<HTMLElement>(
    `.jp-gpuspawn-gpu[data-uuid="${uuid}"]`
  );
}

describe('ContainerPanel', () => {
  let fed: FedModel;
  let panel: ContainerPanel;
  beforeEach(() => {
    fed = new FedModel();
    panel = new ContainerPanel(fed.model);
  });
  afterEach(() => {
    panel.dispose();
    fed.model.dispose();
  });

  it('says it is loading until the first answer', async () => {
    const loading = panel.node.querySelector<HTMLElement>(
      '.jp-gpuspawn-loading'
    )!;
    expect(loading.hidden).toBe(false);
    await fed.next(status());
    expect(loading.hidden).toBe(true);
    expect(value(panel, 'image').textContent).toBe(
      'local/gpuspawn-singleuser:latest'
    );
    expect(value(panel, 'cpu').textContent).toBe('0.50 of 2 cores');
  });

  it('updates in place: the same elements and text nodes across polls, new figures in them', async () => {
    await fed.next(status());
    const gpuCard = card(panel, UUID_A)!;
    const uuidText = value(panel, 'uuid').firstChild;
    const utilisation = value(panel, 'utilization');
    const utilisationText = utilisation.firstChild;
    const path = gpuCard.querySelector('svg path')!;
    const before = path.getAttribute('d');
    const image = value(panel, 'image').firstChild;

    await fed.next(
      status({ gpus: [gpu({ utilization_pct: 81, memory_used: 40 * GIB })] })
    );

    expect(card(panel, UUID_A)).toBe(gpuCard);
    expect(value(panel, 'uuid').firstChild).toBe(uuidText);
    expect(uuidText?.textContent).toBe(UUID_A);
    expect(value(panel, 'image').firstChild).toBe(image);
    expect(value(panel, 'utilization')).toBe(utilisation);
    expect(utilisation.firstChild).toBe(utilisationText); // the data changed, not the node
    expect(utilisation.textContent).toBe('81%');
    expect(value(panel, 'gpu-memory').textContent).toBe('40/80 GB');
    expect(gpuCard.querySelector('svg path')).toBe(path);
    expect(path.getAttribute('d')).not.toBe(before);
  });

  it('keeps a selection in the UUID across polls', async () => {
    await fed.next(status());
    const text = value(panel, 'uuid').firstChild!;
    document.body.appendChild(panel.node);
    const selection = document.getSelection()!;
    const range = document.createRange();
    range.selectNodeContents(text);
    selection.removeAllRanges();
    selection.addRange(range);
    await fed.next(status({ gpus: [gpu({ utilization_pct: 5 })] }));
    await fed.next(status({ gpus: [gpu({ utilization_pct: 95 })] }));
    expect(selection.toString()).toBe(UUID_A);
    panel.node.remove();
  });

  it('adds and removes GPU cards when the set of GPUs changes, and keeps the others', async () => {
    await fed.next(status());
    const first = card(panel, UUID_A);
    await fed.next(status({ gpus: [gpu(), gpu({ uuid: UUID_B, index: 1 })] }));
    expect(card(panel, UUID_A)).toBe(first);
    expect(card(panel, UUID_B)).not.toBeNull();
    await fed.next(status({ gpus: [gpu({ uuid: UUID_B, index: 1 })] }));
    expect(card(panel, UUID_A)).toBeNull();
    const cards = panel.node.querySelectorAll('.jp-gpuspawn-gpu');
    expect(cards).toHaveLength(1);
  });

  it('says CPU only for a server without GPUs', async () => {
    await fed.next(status({ gpus: [] }));
    const cpuOnly = panel.node.querySelector<HTMLElement>(
      '.jp-gpuspawn-cpu-only'
    )!;
    expect(cpuOnly.hidden).toBe(false);
    await fed.next(status());
    expect(cpuOnly.hidden).toBe(true);
  });

  it('badges a simulated GPU, and says when its figures are made up', async () => {
    await fed.next(status());
    const badge = card(panel, UUID_A)!.querySelector<HTMLElement>(
      '.jp-gpuspawn-badge'
    )!;
    expect(badge.hidden).toBe(true);
    await fed.next(
      status({
        gpus: [gpu({ simulated: true, demo_figures: ['utilization_pct'] })]
      })
    );
    expect(badge.hidden).toBe(false);
    expect(badge.textContent).toBe('simulated');
    expect(badge.title).toMatch(/made up/);
  });

  it('gives every value a title with all of it (the tooltip when it is cut short)', async () => {
    await fed.next(status());
    for (const dd of panel.node.querySelectorAll<HTMLElement>('dd')) {
      if (!(dd.parentElement as HTMLElement).hidden) {
        expect(dd.title).toBe(dd.textContent);
      }
    }
  });

  it('hides the rows of values the server does not have', async () => {
    await fed.next(
      status({ container: { ...status().container, course: null } })
    );
    expect((value(panel, 'course').parentElement as HTMLElement).hidden).toBe(
      true
    );
    expect((value(panel, 'power').parentElement as HTMLElement).hidden).toBe(
      true
    );
    await fed.next(status({ gpus: [gpu({ power_w: 212.4 })] }));
    expect((value(panel, 'course').parentElement as HTMLElement).hidden).toBe(
      false
    );
    expect(value(panel, 'power').textContent).toBe('212 W');
  });

  it('marks a container limit that is nearly reached', async () => {
    await fed.next(status());
    expect(
      value(panel, 'memory').classList.contains('jp-gpuspawn-near-limit')
    ).toBe(false);
    await fed.next(
      status({ container: { ...status().container, memory_used: 0.97 * GIB } })
    );
    expect(
      value(panel, 'memory').classList.contains('jp-gpuspawn-near-limit')
    ).toBe(true);
  });

  it('keeps process rows by PID', async () => {
    const p = (pid: number, used: number) => ({
      pid,
      used_memory: used * GIB,
      command: 'python'
    });
    await fed.next(status({ gpus: [gpu({ processes: [p(7, 1), p(9, 2)] })] }));
    const rows = () => [...card(panel, UUID_A)!.querySelectorAll('tbody tr')];
    const [row7] = rows();
    await fed.next(status({ gpus: [gpu({ processes: [p(7, 3)] })] }));
    expect(rows()).toEqual([row7]);
    expect(row7.textContent).toBe('7python3.0 GB');
    await fed.next(status({ gpus: [gpu({ processes: [] })] }));
    const none = card(panel, UUID_A)!.querySelector<HTMLElement>(
      '.jp-gpuspawn-processes p'
    )!;
    expect(none.hidden).toBe(false);
  });

  it('lists the server’s errors, updating the list in place', async () => {
    await fed.next(status({ errors: ['one', 'two'] }));
    const list = panel.node.querySelector<HTMLElement>('.jp-gpuspawn-errors')!;
    const first = list.children[0];
    expect(list.hidden).toBe(false);
    await fed.next(status({ errors: ['one again'] }));
    expect([...list.children].map(li => li.textContent)).toEqual(['one again']);
    expect(list.children[0]).toBe(first);
    await fed.next(status());
    expect(list.hidden).toBe(true);
  });

  it('says when the status is unavailable, and keeps the last figures greyed', async () => {
    await fed.next(status());
    await fed.next(new Error('the status endpoint answered 502'));
    const error = panel.node.querySelector<HTMLElement>('.jp-gpuspawn-error')!;
    expect(error.hidden).toBe(false);
    expect(error.textContent).toBe(
      'Status unavailable: the status endpoint answered 502'
    );
    expect(panel.node.querySelector('.jp-gpuspawn-body')!.classList).toContain(
      'jp-gpuspawn-stale'
    );
    expect(value(panel, 'utilization').textContent).toBe('37%');
    await fed.next(status());
    expect(error.hidden).toBe(true);
  });

  it('notes a settings-load failure, with the defaults it uses instead', () => {
    const note = panel.node.querySelector<HTMLElement>(
      '.jp-gpuspawn-settings-error'
    )!;
    expect(note.hidden).toBe(true);
    panel.showSettingsError('Schema not found');
    expect(note.hidden).toBe(false);
    expect(note.textContent).toContain('Schema not found');
    expect(note.textContent).toContain('a refresh every 2 s, 5 min of history');
  });

  it('shows the hub’s reclaim warning as one alert, updated in place', async () => {
    const reclaim = {
      deadline: 0,
      seconds_left: 600,
      reason: 'idle',
      message: 'Servers here give idle GPUs back after 30 minutes.',
      idle_since: null,
      waiting: 1
    };
    await fed.next(status({ reclaim }));
    const alert = panel.node.querySelector('[role="alert"]')!;
    expect(
      alert.querySelector('[data-key="reclaim-countdown"]')!.textContent
    ).toBe('10 min');
    expect(alert.textContent).toContain(
      'This server will be stopped in 10 min (at '
    );
    fed.clock += 120_000;
    await fed.next(status({ reclaim: { ...reclaim, seconds_left: 480 } }));
    expect(panel.node.querySelector('[role="alert"]')).toBe(alert);
    expect(
      alert.querySelector('[data-key="reclaim-countdown"]')!.textContent
    ).toBe('8 min');
    await fed.next(status());
    expect(panel.node.querySelector('[role="alert"]')).toBeNull();
  });
});

describe('ContainerPanel translated', () => {
  // a "translation" that marks each string, and puts the time before the countdown as a translation may
  const trans: Trans = {
    __: (msgid: string, ...args: any[]) =>
      msgid === 'This server will be stopped in %1 (at %2)'
        ? strfmt('At %2, in %1, this server stops', ...args)
        : strfmt(`«${msgid}»`, ...args),
    _n: (one: string, many: string, n: number, ...args: any[]) =>
      strfmt(`«${n === 1 ? one : many}»`, n, ...args)
  };

  it('sends its labels and figures through the translator it is given', async () => {
    const fed = new FedModel();
    const panel = new ContainerPanel(fed.model, trans);
    await fed.next(status());
    const labels = [...panel.node.querySelectorAll('dt')].map(
      dt => dt.textContent
    );
    expect(labels).toContain('«Memory»');
    expect(labels).toContain('«Utilisation»');
    expect(value(panel, 'utilization').textContent).toBe('«37%»');
    expect(panel.node.querySelector('h2')!.textContent).toBe('«My container»');
    panel.dispose();
    fed.model.dispose();
  });

  it('places the countdown and the time where the translation puts them', async () => {
    const fed = new FedModel();
    const panel = new ContainerPanel(fed.model, trans);
    const reclaim = {
      deadline: 0,
      seconds_left: 300,
      reason: 'budget',
      message: null,
      idle_since: null,
      waiting: null
    };
    await fed.next(status({ reclaim }));
    const heading = panel.node.querySelector('.jp-gpuspawn-reclaim-heading')!;
    const keys = [...heading.querySelectorAll('[data-key]')].map(
      n => (n as HTMLElement).dataset.key
    );
    expect(keys).toEqual(['reclaim-time', 'reclaim-countdown']);
    expect(heading.textContent).toMatch(
      /^At .+, in «5 min», this server stops$/
    );
    panel.dispose();
    fed.model.dispose();
  });
});
