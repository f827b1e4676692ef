/**
 * The Help view: what a support person needs (user, session, job, partition, node, the end of
 * the job's log) as text to copy, and the site's help page.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

import { IHelp, ISupport, requestAPI } from './api';

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
      <pre class="sf-help-text">Loading…</pre>
      <h3>Ask for help</h3>
      <p>The site's support team gets access to this session, and only this one, for the
        hours you choose; you can revoke it at any time.</p>
      <form class="sf-help-ask">
        <label>What is wrong?<br>
          <textarea class="sf-help-message" rows="4" maxlength="2000" required></textarea>
        </label><br>
        <label>Access for <input class="sf-help-hours" type="number" min="1" max="24"
          step="1" value="2" required> hours</label>
        <button type="submit" class="jp-Button jp-mod-styled jp-mod-accept sf-help-send">
          Ask for help</button>
      </form>
      <p class="sf-help-result" role="status"></p>
      <ul class="sf-help-requests"></ul>`;
    this.textNode = this.node.querySelector('.sf-help-text') as HTMLPreElement;
    (this.node.querySelector('.sf-help-copy') as HTMLButtonElement).onclick = () => {
      Clipboard.copyToSystem(this.textNode.textContent || '');
    };
    (this.node.querySelector('.sf-help-refresh') as HTMLButtonElement).onclick = () =>
      void this.refresh();
    (this.node.querySelector('.sf-help-ask') as HTMLFormElement).onsubmit = event => {
      event.preventDefault();
      void this.ask();
    };
    void this.refresh();
    void this.refreshRequests();
  }

  /** Ask the hub (through this session's server) to let support in. */
  async ask(): Promise<void> {
    const result = this.node.querySelector('.sf-help-result') as HTMLParagraphElement;
    const message = (this.node.querySelector('.sf-help-message') as HTMLTextAreaElement).value;
    const hours = (this.node.querySelector('.sf-help-hours') as HTMLInputElement).value;
    try {
      await requestAPI('support', {
        method: 'POST',
        body: JSON.stringify({ message, hours: Number(hours) })
      });
      result.textContent = 'Your request was sent; support can open this session now.';
    } catch (error) {
      result.textContent = `Could not ask for help: ${(error as Error).message}`;
    }
    await this.refreshRequests();
  }

  /** This session's help requests: who has access, until when, and a Revoke button. */
  async refreshRequests(): Promise<void> {
    const list = this.node.querySelector('.sf-help-requests') as HTMLUListElement;
    const hoursInput = this.node.querySelector('.sf-help-hours') as HTMLInputElement;
    let support: ISupport;
    try {
      support = await requestAPI<ISupport>('support');
    } catch (error) {
      list.textContent = `Could not read this session's help requests: ${(error as Error).message}`;
      return;
    }
    if (support.max_hours) {
      hoursInput.max = String(support.max_hours);
      if (Number(hoursInput.value) > support.max_hours) {
        hoursInput.value = String(support.default_hours || 1);
      }
    }
    list.replaceChildren();
    for (const request of support.requests) {
      const item = document.createElement('li');
      item.className = `sf-help-request sf-help-${request.state}`;
      const who = request.access.length ? request.access.join(', ') : 'nobody';
      item.textContent =
        request.state === 'open'
          ? `Open until ${request.expires_iso}: ${who} may open this session. `
          : `${request.state} (${request.message.slice(0, 60)}) `;
      if (request.state === 'open') {
        const revoke = document.createElement('button');
        revoke.className = 'jp-Button jp-mod-styled jp-mod-warn sf-help-revoke';
        revoke.textContent = 'Revoke';
        revoke.onclick = async () => {
          try {
            await requestAPI(`support/${request.id}`, { method: 'DELETE' });
          } catch (error) {
            item.append(` Could not revoke: ${(error as Error).message}`);
            return;
          }
          await this.refreshRequests();
        };
        item.appendChild(revoke);
      }
      list.appendChild(item);
    }
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
      // The front door on the hub: everything you have, and the site's models and datasets.
      const hubPrefix = PageConfig.getOption('hubPrefix');
      if (hubPrefix) {
        const hubHost = PageConfig.getOption('hubHost');
        for (const [page, label] of [['home', 'Your home page'], ['catalog', 'Models and datasets']]) {
          const link = document.createElement('a');
          link.href = hubHost + URLExt.join(hubPrefix, page);
          link.target = '_blank';
          link.rel = 'noopener noreferrer';
          link.className = 'sf-help-hub-link';
          link.textContent = label;
          site.appendChild(document.createTextNode(' · '));
          site.appendChild(link);
        }
      }
    } catch (error) {
      this.textNode.textContent = `Could not read this session's facts: ${error}`;
    }
  }

  private textNode: HTMLPreElement;
}
