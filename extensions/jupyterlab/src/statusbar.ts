/**
 * The status bar item: partition, node, time left in the job, memory against the job's limit;
 * and the warnings before the job ends, with a one-click "Save all".
 */
import { Notification } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import {
  formatLeft,
  gib,
  idleSecondsLeft,
  IJobStatus,
  requestAPI,
  secondsLeft
} from './api';

const POLL_MS = 30_000;
const TICK_MS = 10_000;

export class JobStatusItem extends Widget {
  constructor(commands: CommandRegistry) {
    super();
    this.commands = commands;
    this.addClass('sf-job-status');
    this.addClass('jp-StatusBar-TextItem');
    this.node.textContent = 'Shopfloor…';
    this.node.onclick = () => void this.commands.execute('shopfloor:help');
    void this.poll();
    this.pollTimer = window.setInterval(() => void this.poll(), POLL_MS);
    this.tickTimer = window.setInterval(() => this.render(), TICK_MS);
  }

  dispose(): void {
    window.clearInterval(this.pollTimer);
    window.clearInterval(this.tickTimer);
    super.dispose();
  }

  /** The last status from the server (null until the first answer). */
  get status(): IJobStatus | null {
    return this._status;
  }

  async poll(): Promise<void> {
    try {
      this._status = await requestAPI<IJobStatus>('status');
      this.receivedAt = Date.now();
    } catch (error) {
      this.node.title = `Shopfloor: cannot read this session's status (${error})`;
    }
    this.render();
  }

  render(): void {
    const status = this._status;
    if (!status) {
      return;
    }
    if (!status.in_job) {
      this.node.textContent = 'not in a Slurm job';
      this.node.title = 'This Jupyter server does not run in a Slurm job.';
      return;
    }
    const left = secondsLeft(status, this.receivedAt, Date.now());
    const parts = [status.partition, status.node];
    parts.push(left === null ? 'time left unknown' : formatLeft(left));
    if (status.memory_limit_bytes) {
      parts.push(`${gib(status.memory_used_bytes)} / ${gib(status.memory_limit_bytes)} GiB`);
    } else {
      parts.push(`${gib(status.memory_used_bytes)} GiB`);
    }
    this.node.textContent = parts.filter(Boolean).join(' · ');
    this.node.dataset.secondsLeft = left === null ? '' : String(Math.round(left));
    const memoryShare = status.memory_limit_bytes
      ? status.memory_used_bytes / status.memory_limit_bytes
      : 0;
    this.toggleClass('sf-job-status-low', left !== null && left < 15 * 60);
    this.toggleClass('sf-job-status-memory', memoryShare > 0.9);
    this.node.title =
      `Slurm job ${status.job_id} on partition ${status.partition}, node ${status.node}` +
      (status.time_limit ? `, time limit ${status.time_limit}` : '') +
      '. Memory: this server and its kernels against the job\'s limit. Click for help.' +
      (status.problem ? `\n${status.problem}` : '');
    if (left !== null) {
      this.warn(status, left);
    }
    this.warnIdle(status);
  }

  /**
   * Before the hub's idle culler stops this session: one notification per idle spell, with
   * "Keep session" (counts as activity) and "Save all"; withdrawn once there is activity.
   */
  private warnIdle(status: IJobStatus): void {
    const left = idleSecondsLeft(status, this.receivedAt, Date.now());
    const lead = status.idle_warn_minutes * 60;
    if (left === null || !lead || left > lead) {
      if (this.idleNotice) {
        Notification.dismiss(this.idleNotice);
        this.idleNotice = '';
      }
      return;
    }
    if (this.idleNotice || left <= 0) {
      return;
    }
    const shown = Math.max(1, Math.floor(left / 60));
    this.idleNotice = Notification.warning(
      `Idle: this session stops in about ${shown} minute${shown === 1 ? '' : 's'} ` +
        `(sessions on ${status.partition} stop after ${status.idle_minutes} idle minutes).`,
      {
        autoClose: false,
        actions: [
          {
            label: 'Keep session',
            caption: 'Count this as activity, so the session is not stopped',
            callback: () => void requestAPI('keep', { method: 'POST' }).then(() => this.poll())
          },
          {
            label: 'Save all',
            caption: 'Save every open document',
            callback: () => void this.commands.execute('docmanager:save-all')
          }
        ]
      }
    );
  }

  /** One notification per threshold and job, also across page reloads. */
  private warn(status: IJobStatus, left: number): void {
    for (const minutes of status.warn_minutes) {
      const key = `shopfloor:warned:${status.job_id}:${minutes}`;
      if (left > minutes * 60 || left <= 0 || window.localStorage.getItem(key)) {
        continue;
      }
      // Every threshold passed by now counts as warned: one notification, not one each.
      for (const passed of status.warn_minutes.filter(m => left <= m * 60)) {
        window.localStorage.setItem(`shopfloor:warned:${status.job_id}:${passed}`, '1');
      }
      const shown = Math.max(1, Math.floor(left / 60)); // as the status item counts
      Notification.warning(
        `This session ends in ${shown} minute${shown === 1 ? '' : 's'} ` +
          `(Slurm job ${status.job_id}). Save your work: unsaved changes are lost when it ends.`,
        {
          autoClose: false,
          actions: [
            {
              label: 'Save all',
              caption: 'Save every open document',
              callback: () => void this.commands.execute('docmanager:save-all')
            }
          ]
        }
      );
      break; // one notification for every threshold passed at once
    }
  }

  private commands: CommandRegistry;
  private _status: IJobStatus | null = null;
  private receivedAt = 0;
  private idleNotice = '';
  private pollTimer: number;
  private tickTimer: number;
}
