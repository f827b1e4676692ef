/**
 * The Shopfloor server extension's REST API (`shopfloor/lab/...` of this Jupyter server).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The session's job, as `GET shopfloor/lab/status` returns it (times: server epoch seconds). */
export interface IJobStatus {
  in_job: boolean;
  user: string;
  server_name: string;
  job_id: string;
  partition: string;
  node: string;
  end_epoch: number | null;
  time_limit: string;
  now_epoch: number;
  memory_used_bytes: number;
  memory_limit_bytes: number | null;
  problem: string;
  warn_minutes: number[];
  help_url: string;
  gallery_url: string;
  examples_dir: string;
  version: string;
  /** The hub's idle limit for this session in minutes (0: never stopped for idling). */
  idle_minutes: number;
  /** Minutes before that limit at which to warn (0: no warning). */
  idle_warn_minutes: number;
  /** Seconds since the server's last activity (the culler's clock), null when unknown. */
  idle_seconds: number | null;
}

export interface IHelp extends IJobStatus {
  log: string;
  text: string;
}

/** One help request on this session (`GET shopfloor/lab/support`). */
export interface IHelpRequest {
  id: number;
  state: string;
  message: string;
  hours: number;
  expires_iso: string;
  /** The support members who may open this session now (empty once it ended). */
  access: string[];
}

export interface ISupport {
  session: string;
  max_hours: number;
  default_hours: number;
  requests: IHelpRequest[];
}

/** Call the server extension; throws an Error carrying the server's message. */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'shopfloor/lab', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let data: any = text;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    // not JSON: keep the text for the message below
  }
  if (!response.ok) {
    const message = (data && (data.message || data.reason)) || text || response.statusText;
    throw new Error(message);
  }
  return data as T;
}

/** Seconds until the job ends by this browser's clock, or null when unknown. */
export function secondsLeft(status: IJobStatus, receivedAt: number, now: number): number | null {
  if (status.end_epoch === null) {
    return null;
  }
  // The server's clock decides; the browser only counts the seconds since the answer came.
  return status.end_epoch - status.now_epoch - (now - receivedAt) / 1000;
}

/** `1:05 left`, `42 min left`, `ended`. */
export function formatLeft(seconds: number): string {
  if (seconds <= 0) {
    return 'ended';
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min left`;
  }
  const hours = Math.floor(minutes / 60);
  const rest = String(minutes % 60).padStart(2, '0');
  return `${hours}:${rest} left`;
}

/** Bytes as GiB with one decimal. */
export function gib(bytes: number): string {
  return (bytes / 1024 ** 3).toFixed(1);
}

/** Seconds until the idle culler may stop the session, or null when it never will. */
export function idleSecondsLeft(
  status: IJobStatus,
  receivedAt: number,
  now: number
): number | null {
  if (!status.idle_minutes || status.idle_seconds === null) {
    return null;
  }
  // Idle time keeps growing between polls: the status poll itself is not activity.
  const idle = status.idle_seconds + (now - receivedAt) / 1000;
  return status.idle_minutes * 60 - idle;
}
