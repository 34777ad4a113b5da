import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { LabIcon } from '@jupyterlab/ui-components';
import { StatusModel } from './model';
// The panel and the status item show from the start, and the requester polls from then on: nothing to load later.
// eslint-disable-next-line jupyter/prefer-lazy-imports
import { ContainerPanel } from './panel';
// eslint-disable-next-line jupyter/prefer-lazy-imports
import { statusRequester } from './request';
import { DEFAULT_SETTINGS, loadSettings, readValues } from './settings';
// eslint-disable-next-line jupyter/prefer-lazy-imports
import { StatusBarItem } from './statusbar';
import { DOMAIN } from './trans';

const PLUGIN_ID = 'jupyter-gpuspawn:plugin';
const OPEN_COMMAND = 'jupyter-gpuspawn:open-panel';

const gpuIcon = new LabIcon({
  name: 'jupyter-gpuspawn:gpu',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<path d="M3 7h15a2 2 0 0 1 2 2v6a2 2 0 0 1-2 2H3zm3 3v4h4v-4zm6 0v4h4v-4zM21 9h1v6h-1zM5 17h2v2H5zm4 0h2v2H9z"/>' +
    '</g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Shows this container and its GPUs in the status bar and a side panel.',
  autoStart: true,
  optional: [IStatusBar, ISettingRegistry, ILabShell, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    labShell: ILabShell | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load(DOMAIN);
    // started with the defaults: the settings come in below, without holding up JupyterLab's start
    const model = new StatusModel({
      fetch: statusRequester(),
      interval: DEFAULT_SETTINGS.refreshInterval,
      historyMinutes: DEFAULT_SETTINGS.historyMinutes
    });

    const panel = new ContainerPanel(model, trans);
    panel.title.icon = gpuIcon;
    app.shell.add(panel, 'right', { rank: 900 });

    app.commands.addCommand(OPEN_COMMAND, {
      label: trans.__('My Container and GPUs'),
      describedBy: { args: { type: 'object', properties: {} } },
      execute: () => {
        app.shell.activateById(panel.id);
        void model.refresh();
      }
    });

    if (statusBar) {
      const item = new StatusBarItem(
        model,
        () => void app.commands.execute(OPEN_COMMAND),
        trans
      );
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 1000,
        isActive: () => model.active,
        activeStateChanged: model.stateChanged
      });
    }
    if (labShell) {
      labShell.restored.then(() => void model.refresh()).catch(() => undefined);
    }

    // a failure is logged by loadSettings and noted in the panel; the defaults stay in use
    void loadSettings(settingRegistry, PLUGIN_ID).then(loaded => {
      if (loaded.error !== null) {
        panel.showSettingsError(loaded.error);
        return;
      }
      model.configure(
        loaded.values.refreshInterval,
        loaded.values.historyMinutes
      );
      loaded.settings?.changed.connect(settings => {
        const values = readValues(settings);
        model.configure(values.refreshInterval, values.historyMinutes);
      });
    });
  }
};

export default plugin;
