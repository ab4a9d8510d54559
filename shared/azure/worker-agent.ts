// The worker agent on an Azure worker VM (the entry point of the Azure worker
// bundle, started by the install Run Command as the tender-agent unit). It
// waits for its job on the job queue, reads each snapshot through the SAS in
// the job (the data mover's Azure snapshot source: page ranges, and the
// page-range diff against the parent snapshot for an incremental), writes the
// repository with the data mover, and reports heartbeats, progress and the
// result on the report queue. The repository passphrase comes from Key Vault
// with the VM's managed identity; queue SAS are its only other credentials.

import { QueueClient } from '@azure/storage-queue';
import type { BackupResult, JobProgress } from '../ports/cloud.js';
import type { BlockSource } from '../ports/block-source.js';
import type { ObjectStore } from '../ports/object-store.js';
import type { KeyRef } from '../core/config.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { ConfigError, toError } from '../core/errors.js';
import { openAzureSnapshotSource } from '../../worker/sources/azure-snapshot.js';
import { openStoreFromUrl } from '../../worker/store-from-url.js';
import { openOrInitRepository } from '../../worker/repository.js';
import { backupVm } from '../../worker/backup.js';
import { backupRequestForJob } from '../../worker/job.js';
import { repositorySecretFromAzureKeyRef } from './key-vault.js';
import type { RepositorySecret } from '../../worker/crypto.js';
import { decodeMessage, encodeMessage, type JobMessage, type ReportMessage } from './worker-protocol.js';

export interface AzureAgentOptions {
  workerId: string;
  jobQueue: QueueClient;
  reportQueue: QueueClient;
  clock?: Clock;
  /** Heartbeat interval (the pipeline's timeout is several of these). */
  heartbeatMs?: number;
  /** Progress reports at most this often: every queue write is a billed transaction. */
  progressMs?: number;
  /** Stop after one job (tests, and a worker that is deallocated right after anyway). */
  once?: boolean;
  /** Give up waiting for a job after this long (ms); default: wait until the VM is deallocated. */
  idleTimeoutMs?: number;
  openSource?: typeof openAzureSnapshotSource;
  openStore?: (url: string) => Promise<ObjectStore>;
  /** What opens the repository (default: Key Vault key or passphrase, per the policy). */
  passphrase?: (ref: KeyRef) => Promise<RepositorySecret>;
  log?: (line: string) => void;
}

/** Runs the agent; resolves after the job when `once`, or when idle too long. */
export async function runAzureAgent(opts: AzureAgentOptions): Promise<BackupResult | undefined> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const openSource = opts.openSource ?? openAzureSnapshotSource;
  const openStore = opts.openStore ?? ((url: string) => openStoreFromUrl(url));
  const passphrase = opts.passphrase ?? ((ref: KeyRef) => repositorySecretFromAzureKeyRef(ref));
  let currentJob: string | undefined;
  // A job re-sent after a pipeline crash arrives twice: it runs once.
  const seen = new Set<string>();
  let sending: Promise<unknown> = Promise.resolve();

  const send = (m: ReportMessage) => {
    // One report in flight at a time, in order; a lost progress report is not an error, a lost result is retried below.
    sending = sending.then(() => opts.reportQueue.sendMessage(encodeMessage(m)).catch((e) => log(`report not sent: ${toError(e).message}`)));
    return sending;
  };
  const heartbeat = () => send({ type: 'heartbeat', workerId: opts.workerId, at: clock.now().toISOString(), ...(currentJob ? { jobId: currentJob } : {}) });
  const timer = setInterval(() => void heartbeat(), opts.heartbeatMs ?? 30_000);
  timer.unref?.();
  await heartbeat();

  try {
    const waitStart = clock.now().getTime();
    let delay = 1000;
    for (;;) {
      const res = await opts.jobQueue.receiveMessages({ numberOfMessages: 1, visibilityTimeout: 600 }).catch((e) => {
        log(`job queue not readable: ${toError(e).message}`);
        return { receivedMessageItems: [] as Array<{ messageId: string; popReceipt: string; messageText: string }> };
      });
      const item = res.receivedMessageItems[0];
      if (!item) {
        if (opts.idleTimeoutMs !== undefined && clock.now().getTime() - waitStart > opts.idleTimeoutMs) return undefined;
        await clock.sleep(delay);
        delay = Math.min(delay * 2, 10_000);
        continue;
      }
      delay = 1000;
      // Taken off the queue before the work: a worker that dies mid-job is reported by its silence, not by a redelivery.
      await opts.jobQueue.deleteMessage(item.messageId, item.popReceipt).catch(() => undefined);
      const msg = decodeMessage<JobMessage>(item.messageText);
      if (!msg || msg.type !== 'job') {
        log('ignored a message that is not a job');
        continue;
      }
      if (seen.has(msg.job.jobId)) {
        log(`job ${msg.job.jobId} arrived again; it already ran here`);
        continue;
      }
      seen.add(msg.job.jobId);
      const result = await runOne(msg);
      if (opts.once) return result;
    }
  } finally {
    clearInterval(timer);
    await sending;
  }

  async function runOne(msg: JobMessage): Promise<BackupResult | undefined> {
    const { job } = msg;
    currentJob = job.jobId;
    const total = job.disks.reduce((n, d) => n + d.sizeBytes, 0);
    let latest: JobProgress = { bytesDone: 0, bytesTotal: total, bytesPerSecond: 0 };
    let lastSent = 0;
    const progress = (p: JobProgress) => {
      latest = p;
      const now = clock.now().getTime();
      if (now - lastSent < (opts.progressMs ?? 10_000)) return;
      lastSent = now;
      void send({ type: 'progress', workerId: opts.workerId, at: clock.now().toISOString(), jobId: job.jobId, progress: latest });
    };
    const sources: BlockSource[] = [];
    try {
      const req = await backupRequestForJob(
        job,
        async (d) => {
          const grant = msg.disks.find((x) => x.diskId === d.diskId);
          if (!grant) throw new ConfigError(`the job names disk ${d.diskId} but carries no read SAS for it`);
          return openSource({ sasUrl: grant.sasUrl, ...(grant.parentSasUrl ? { parentSasUrl: grant.parentSasUrl } : {}) });
        },
        sources,
        progress,
      );
      const store = await openStore(job.repository.url);
      const repo = await openOrInitRepository(store, await passphrase(job.repository.key), { incremental: req.disks.some((d) => d.parentSnapshotRef) });
      let result: BackupResult;
      try {
        void send({ type: 'progress', workerId: opts.workerId, at: clock.now().toISOString(), jobId: job.jobId, progress: latest });
        result = await backupVm(repo, req);
      } finally {
        await repo.close();
      }
      await sendResult({ type: 'result', workerId: opts.workerId, at: clock.now().toISOString(), jobId: job.jobId, state: 'succeeded', result });
      return result;
    } catch (e) {
      const err = toError(e);
      log(`job ${job.jobId} failed: ${err.stack ?? err.message}`);
      await sendResult({ type: 'result', workerId: opts.workerId, at: clock.now().toISOString(), jobId: job.jobId, state: 'failed', error: { name: err.name, message: err.message } });
      return undefined;
    } finally {
      currentJob = undefined;
      await Promise.all(sources.map((s) => s.close().catch(() => undefined)));
    }
  }

  async function sendResult(m: ReportMessage): Promise<void> {
    await sending;
    for (let attempt = 1; ; attempt++) {
      try {
        await opts.reportQueue.sendMessage(encodeMessage(m));
        return;
      } catch (e) {
        // Without the result the pipeline waits for the heartbeat timeout: worth several tries.
        if (attempt >= 8) return log(`result not sent: ${toError(e).message}`);
        await clock.sleep(Math.min(30_000, 500 * 2 ** attempt));
      }
    }
  }
}

/** The agent from the environment the install script writes (agent.env). */
export async function runAzureAgentFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const need = (k: string) => {
    const v = env[k];
    if (!v) throw new ConfigError(`${k} is not set — the install command writes it to /opt/tender/agent.env`);
    return v;
  };
  await runAzureAgent({
    workerId: need('TENDER_WORKER_ID'),
    jobQueue: new QueueClient(need('TENDER_JOB_QUEUE_URL')),
    reportQueue: new QueueClient(need('TENDER_REPORT_QUEUE_URL')),
  });
}
