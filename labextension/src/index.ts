import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { StatusModel } from './model';
import { ContainerPanel } from './panel';
import { StatusBarItem } from './statusbar';

const PLUGIN_ID = 'jupyter-gpuspawn:plugin';

const gpuIcon = new LabIcon({
  name: 'jupyter-gpuspawn:gpu',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<path d="M3 7h15a2 2 0 0 1 2 2v6a2 2 0 0 1-2 2H3zm3 3v4h4v-4zm6 0v4h4v-4zM21 9h1v6h-1zM5 17h2v2H5zm4 0h2v2H9z"/>' +
    '</g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Shows this container and its GPUs in the status bar and a side panel.',
  autoStart: true,
  optional: [IStatusBar, ISettingRegistry, ILabShell],
  activate: async (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    labShell: ILabShell | null
  ) => {
    let interval = 2;
    let history = 5;
    const settings = settingRegistry ? await settingRegistry.load(PLUGIN_ID).catch(() => null) : null;
    if (settings) {
      interval = settings.get('refreshInterval').composite as number;
      history = settings.get('historyMinutes').composite as number;
    }
    const model = new StatusModel(interval, history);
    settings?.changed.connect(() => {
      model.configure(
        settings.get('refreshInterval').composite as number,
        settings.get('historyMinutes').composite as number
      );
    });

    const panel = new ContainerPanel(model);
    panel.title.icon = gpuIcon;
    app.shell.add(panel, 'right', { rank: 900 });

    const command = 'jupyter-gpuspawn:open-panel';
    app.commands.addCommand(command, {
      label: 'My Container and GPUs',
      execute: () => {
        app.shell.activateById(panel.id);
        void model.refresh();
      }
    });

    if (statusBar) {
      const item = new StatusBarItem(model, () => void app.commands.execute(command));
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 1000,
        isActive: () => true
      });
    }
    if (labShell) {
      labShell.restored.then(() => void model.refresh()).catch(() => undefined);
    }
  }
};

export default plugin;
