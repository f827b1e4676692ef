/**
 * Shopfloor in JupyterLab: a "Shopfloor" launcher section whose cards open each capability's
 * panel with no code typed, the job's status in the status bar (with warnings before the job
 * ends), "Publish as app..." on every notebook, and a Help view.
 *
 * Panels are ipywidgets views that run in a kernel: a card asks the server extension for the
 * card's small notebook (`POST shopfloor/lab/panels/<card>`), opens it and runs it.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { MainAreaWidget, Notification, ToolbarButton } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import {
  INotebookModel,
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { requestAPI, IJobStatus } from './api';
import { HelpView } from './help';
import { icons } from './icons';
import { JobStatusItem } from './statusbar';

const CATEGORY = 'Shopfloor';
/** The launcher orders sections by their smallest categoryRank; Notebook's is 0: go first. */
const CATEGORY_RANK = -10;

/** Cards in launcher order: those with a `panel` open that panel's notebook. */
const CARDS: { id: string; label: string; caption: string; panel?: string }[] = [
  { id: 'compute', label: 'Compute', caption: 'Partitions, sessions and batch runs', panel: 'compute' },
  { id: 'ray', label: 'Ray cluster', caption: 'A Ray cluster on Slurm', panel: 'ray' },
  { id: 'finetune', label: 'Fine-tune a model', caption: 'The fine-tuning wizard', panel: 'finetune' },
  { id: 'publish', label: 'Publish as app', caption: 'Publish a notebook as an app', panel: 'publish' },
  { id: 'gallery', label: 'Apps gallery', caption: 'Apps published on this hub' },
  { id: 'workshops', label: 'Workshops', caption: 'For trainers: your workshops', panel: 'workshops' },
  { id: 'examples', label: 'Examples', caption: 'Example notebooks in ~/shopfloor-examples' },
  { id: 'help', label: 'Help', caption: 'What support needs to know, and the help pages' }
];

namespace CommandIDs {
  export const openCard = 'shopfloor:open-card';
  export const publishNotebook = 'shopfloor:publish-notebook';
  export const help = 'shopfloor:help';
}

/** Open the card's notebook beside (or in) the main area and run it once its kernel is up. */
async function openPanel(
  app: JupyterFrontEnd,
  card: string,
  notebook?: string
): Promise<NotebookPanel> {
  const { path } = await requestAPI<{ path: string }>(`panels/${card}`, {
    method: 'POST',
    body: JSON.stringify(notebook ? { notebook } : {})
  });
  const panel = (await app.commands.execute('docmanager:open', {
    path,
    factory: 'Notebook',
    options: notebook ? { mode: 'split-right' } : {}
  })) as NotebookPanel;
  await panel.context.ready;
  await panel.sessionContext.ready;
  await NotebookActions.runAll(panel.content, panel.sessionContext);
  // Fresh outputs of a launcher notebook are nothing to save: no "unsaved changes" prompt.
  panel.context.model.dirty = false;
  return panel;
}

async function jobStatus(item: JobStatusItem | null): Promise<IJobStatus> {
  return item?.status ?? (await requestAPI<IJobStatus>('status'));
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@shopfloor/jupyterlab:plugin',
  description: 'Shopfloor launcher cards, job status bar, publish button and help.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILauncher, IStatusBar, IMainMenu, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    launcher: ILauncher | null,
    statusBar: IStatusBar | null,
    mainMenu: IMainMenu | null
  ) => {
    const { commands, shell } = app;
    let help: MainAreaWidget<HelpView> | null = null;
    let statusItem: JobStatusItem | null = null;

    const fail = (what: string) => (error: unknown) => {
      Notification.error(`${what}: ${error instanceof Error ? error.message : error}`, {
        autoClose: 8000
      });
    };

    commands.addCommand(CommandIDs.help, {
      label: 'Shopfloor Help',
      caption: 'What support needs to know about this session',
      icon: icons.help,
      execute: () => {
        if (!help || help.isDisposed) {
          help = new MainAreaWidget({ content: new HelpView() });
          help.title.icon = icons.help;
          shell.add(help, 'main');
        } else {
          void help.content.refresh();
        }
        shell.activateById(help.id);
      }
    });

    commands.addCommand(CommandIDs.openCard, {
      label: args => CARDS.find(c => c.id === args.card)?.label ?? 'Shopfloor',
      caption: args => CARDS.find(c => c.id === args.card)?.caption ?? '',
      icon: args => icons[args.card as string],
      execute: async args => {
        const card = CARDS.find(c => c.id === args.card);
        if (!card) {
          return;
        }
        if (card.panel) {
          return openPanel(app, card.panel).catch(fail(`Could not open ${card.label}`));
        }
        if (card.id === 'help') {
          return commands.execute(CommandIDs.help);
        }
        const status = await jobStatus(statusItem).catch(fail('Shopfloor'));
        if (!status) {
          return;
        }
        if (card.id === 'gallery') {
          if (status.gallery_url) {
            window.open(status.gallery_url, '_blank', 'noopener');
          } else {
            Notification.info('The apps gallery is on the hub; this server runs outside one.');
          }
        } else if (card.id === 'examples') {
          await commands.execute('filebrowser:go-to-path', {
            path: status.examples_dir,
            dontShowBrowser: false
          });
        }
      }
    });

    const currentNotebook = (): NotebookPanel | null => {
      const widget = shell.currentWidget;
      return widget && notebooks.has(widget) ? (widget as NotebookPanel) : notebooks.currentWidget;
    };

    /** The notebook named by `args.path` (the toolbar's own), else the current one. */
    const notebookFor = (path: unknown): NotebookPanel | null => {
      if (typeof path === 'string' && path) {
        return notebooks.find(panel => panel.context.path === path) ?? null;
      }
      return currentNotebook();
    };

    commands.addCommand(CommandIDs.publishNotebook, {
      label: 'Publish as app...',
      caption: 'Publish this notebook as an app (title, audience, partition)',
      icon: icons.publish,
      isEnabled: args => notebookFor(args.path) !== null,
      execute: async args => {
        const panel = notebookFor(args.path);
        if (!panel) {
          return;
        }
        // The app is made from the saved file: save first so it holds what the user sees.
        if (panel.context.model.dirty) {
          await panel.context.save();
        }
        return openPanel(app, 'publish', panel.context.path).catch(
          fail('Could not open the publish dialog')
        );
      }
    });

    if (launcher) {
      CARDS.forEach((card, rank) =>
        launcher.add({
          command: CommandIDs.openCard,
          category: CATEGORY,
          categoryRank: CATEGORY_RANK,
          rank,
          args: { card: card.id }
        })
      );
    }

    if (mainMenu) {
      mainMenu.fileMenu.addGroup([{ command: CommandIDs.publishNotebook }], 40);
      mainMenu.helpMenu.addGroup([{ command: CommandIDs.help }], 0);
    }

    app.docRegistry.addWidgetExtension('Notebook', new PublishButton(commands));

    if (statusBar) {
      statusItem = new JobStatusItem(commands);
      statusBar.registerStatusItem('@shopfloor/jupyterlab:job', {
        item: statusItem,
        align: 'left',
        rank: 100
      });
    }
  }
};

/** "Publish as app..." in every notebook's toolbar. */
class PublishButton
  implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel>
{
  constructor(private commands: JupyterFrontEnd['commands']) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      className: 'sf-publish-button',
      icon: icons.publish,
      label: 'Publish',
      tooltip: 'Publish as app...',
      onClick: () =>
        void this.commands.execute(CommandIDs.publishNotebook, { path: panel.context.path })
    });
    panel.toolbar.insertItem(10, 'shopfloorPublish', button);
    // A launcher card's own notebook (marked in its metadata) is nothing to publish.
    void panel.context.ready.then(() => {
      if (panel.context.model.getMetadata('shopfloor')) {
        button.hide();
      }
    });
    return new DisposableDelegate(() => button.dispose());
  }
}

export default plugin;
