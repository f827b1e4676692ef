/**
 * The Help view: what a support person needs (user, session, job, partition, node, the end of
 * the job's log) as text to copy, and the site's help page.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IHelp, requestAPI } from './api';

export class HelpView extends Widget {
  constructor() {
    super();
    this.addClass('sf-help');
    this.id = 'shopfloor-help';
    this.title.label = 'Shopfloor help';
    this.title.closable = true;
    this.node.innerHTML = `
      <h2>Shopfloor help</h2>
      <p class="sf-help-site"></p>
      <p>Send the text below to your support team with what you tried and what happened.</p>
      <div class="sf-help-actions">
        <button class="jp-Button jp-mod-styled jp-mod-accept sf-help-copy">Copy</button>
        <button class="jp-Button jp-mod-styled sf-help-refresh">Refresh</button>
      </div>
      <pre class="sf-help-text">Loading…</pre>`;
    this.textNode = this.node.querySelector('.sf-help-text') as HTMLPreElement;
    (this.node.querySelector('.sf-help-copy') as HTMLButtonElement).onclick = () => {
      Clipboard.copyToSystem(this.textNode.textContent || '');
    };
    (this.node.querySelector('.sf-help-refresh') as HTMLButtonElement).onclick = () =>
      void this.refresh();
    void this.refresh();
  }

  async refresh(): Promise<void> {
    const site = this.node.querySelector('.sf-help-site') as HTMLParagraphElement;
    try {
      const help = await requestAPI<IHelp>('help');
      this.textNode.textContent = help.text;
      site.textContent = '';
      if (help.help_url) {
        const link = document.createElement('a');
        link.href = help.help_url;
        link.target = '_blank';
        link.rel = 'noopener noreferrer';
        link.textContent = 'Open the help pages of this site';
        site.appendChild(link);
      } else {
        site.textContent = 'This site has not set a help page; ask your administrators.';
      }
    } catch (error) {
      this.textNode.textContent = `Could not read this session's facts: ${error}`;
    }
  }

  private textNode: HTMLPreElement;
}
