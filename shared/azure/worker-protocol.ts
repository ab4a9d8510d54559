// What travels through the worker's two queues (seed 000, "Worker Deployment"
// step 4). The job queue carries one job: the WorkerJob plus a read SAS per
// snapshot (and parent snapshot) the job may read. The report queue carries
// heartbeats, progress and the result back. Messages are base64 JSON: queue
// text must be XML-safe, and base64 is what Azure tools expect to show.

import type { BackupResult, JobProgress, WorkerJob } from '../ports/cloud.js';

export interface JobMessageDisk {
  diskId: string;
  snapshotId: string;
  /** Read SAS of the snapshot (beginGetAccess). */
  sasUrl: string;
  parentSnapshotId?: string;
  parentSasUrl?: string;
}

export interface JobMessage {
  type: 'job';
  job: WorkerJob;
  disks: JobMessageDisk[];
}

export type ReportMessage =
  | { type: 'heartbeat'; workerId: string; at: string; jobId?: string }
  | { type: 'progress'; workerId: string; at: string; jobId: string; progress: JobProgress }
  | { type: 'result'; workerId: string; at: string; jobId: string; state: 'succeeded'; result: BackupResult }
  | { type: 'result'; workerId: string; at: string; jobId: string; state: 'failed'; error: { name: string; message: string } };

/** Azure's limit for one queue message, base64 included. */
export const MAX_QUEUE_MESSAGE_BYTES = 64 * 1024;

export function encodeMessage(m: JobMessage | ReportMessage): string {
  return Buffer.from(JSON.stringify(m), 'utf8').toString('base64');
}

export function decodeMessage<T extends JobMessage | ReportMessage>(text: string): T | undefined {
  try {
    const v = JSON.parse(Buffer.from(text, 'base64').toString('utf8')) as T;
    return v && typeof v === 'object' && typeof (v as { type?: unknown }).type === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}
