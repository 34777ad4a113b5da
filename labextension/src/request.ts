// The one request the model makes: GET {baseUrl}gpuspawn/status, authenticated like every server API call.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatus } from './model';

export function statusRequester(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): () => Promise<IStatus> {
  const url = URLExt.join(settings.baseUrl, 'gpuspawn', 'status');
  return async () => {
    const response = await ServerConnection.makeRequest(url, {}, settings);
    if (!response.ok) {
      throw new Error(`the status endpoint answered ${response.status}`);
    }
    return (await response.json()) as IStatus;
  };
}
