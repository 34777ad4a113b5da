// Translation. The plugin loads JupyterLab's ITranslator bundle for DOMAIN (or the null translator when JupyterLab
// has none) and hands it to every view and formatter: each word a student reads goes through trans.__ or trans._n.
// Only those two methods are needed, so tests can pass plainTrans instead of a whole TranslationBundle.
import type { TranslationBundle } from '@jupyterlab/translation';

export const DOMAIN = 'jupyter_gpuspawn';

export type Trans = Pick<TranslationBundle, '__' | '_n'>;

/** %1, %2… replaced by the arguments and %% by a percent sign, as JupyterLab's Gettext.strfmt does. */
export function strfmt(fmt: string, ...args: unknown[]): string {
  return fmt.replace(/%%|%(\d+)/g, (match: string, n?: string) => {
    if (n === undefined) {
      return '%';
    }
    const value = args[Number(n) - 1];
    return value === undefined ? match : String(value);
  });
}

/** The strings as written, arguments filled in: what JupyterLab's nullTranslator bundle does. */
export const plainTrans: Trans = {
  __: (msgid: string, ...args: any[]) => strfmt(msgid, ...args),
  _n: (msgid: string, plural: string, n: number, ...args: any[]) =>
    strfmt(n === 1 ? msgid : plural, n, ...args)
};
