// The worker agent: the entry point of the worker bundle. Given a job URL and
// its bearer credential, it fetches the job, opens the snapshot's disks and the
// repository, runs the backup, and reports progress and the result to the
// pipeline over the same channel. The credential is the only thing it holds;
// the repository key is fetched by reference (KeyRef), never sent.

import type { BackupResult, JobProgress, WorkerJob } from '../shared/ports/cloud.js';
import { toError } from '../shared/core/errors.js';
import { openImageSource } from './sources/image-file.js';
import { openStoreFromUrl } from './store-from-url.js';
import { openOrInitRepository } from './repository.js';
import { repositorySecretFromKeyRef } from './keys.js';
import { backupVm } from './backup.js';
import { backupRequestForJob } from './job.js';
import type { BlockSource } from '../shared/ports/block-source.js';

export interface AgentJobRef {
  jobUrl: string;
  token: string;
}

/** How often the worker reports even without new bytes, so the pipeline knows it is alive. */
const HEARTBEAT_MS = 5_000;
const PROGRESS_MS = 250;

async function call(ref: AgentJobRef, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(ref.jobUrl + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${ref.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (!res.ok) throw new Error(`${body === undefined ? 'GET' : 'POST'} ${path || 'job'}: HTTP ${res.status} ${(await res.text()).trim()}`);
  return res;
}

async function reportSuccess(ref: AgentJobRef, result: BackupResult): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await call(ref, '/result', { state: 'succeeded', result });
      return;
    } catch (e) {
      if (attempt >= 5) throw e;
      await new Promise((r) => setTimeout(r, Math.random() * 200 * 2 ** attempt));
    }
  }
}

export async function runJob(ref: AgentJobRef): Promise<BackupResult | undefined> {
  const job = (await (await call(ref, '')).json()) as WorkerJob;
  let latest: JobProgress = { bytesDone: 0, bytesTotal: job.disks.reduce((n, d) => n + d.sizeBytes, 0), bytesPerSecond: 0 };
  let lastSent = 0;
  let sending: Promise<unknown> = Promise.resolve();
  const report = (p: JobProgress, force = false) => {
    latest = p;
    const now = Date.now();
    if (!force && now - lastSent < PROGRESS_MS) return;
    lastSent = now;
    // One report in flight at a time; a lost progress report is not an error.
    sending = sending.then(() => call(ref, '/progress', latest).catch(() => undefined));
  };
  const heartbeat = setInterval(() => report(latest, true), HEARTBEAT_MS);
  heartbeat.unref();
  const sources: BlockSource[] = [];
  let succeeded: BackupResult | undefined;
  try {
    const secret = await repositorySecretFromKeyRef(job.repository.key);
    const store = await openStoreFromUrl(job.repository.url);
    const repo = await openOrInitRepository(store, secret, { incremental: job.disks.some((d) => d.parentSnapshotId) });
    try {
      report(latest, true);
      const result = await backupVm(repo, await backupRequestForJob(job, (d) => openImageSource(d.snapshotId), sources, (p) => report(p)));
      await sending;
      // The restore point exists now: report it, retrying, and never turn it into a failure
      // (cleanup would then delete the snapshot set the next incremental needs).
      succeeded = result;
      await reportSuccess(ref, result);
      return result;
    } finally {
      await repo.close();
    }
  } catch (e) {
    if (succeeded) throw e;
    const err = toError(e);
    await sending;
    await call(ref, '/result', { state: 'failed', error: { name: err.name, message: err.message } }).catch(() => undefined);
    return undefined;
  } finally {
    clearInterval(heartbeat);
    await Promise.all(sources.map((s) => s.close().catch(() => undefined)));
  }
}
