// The worker agent on AWS: the entry point of the AWS worker bundle
// (tender-aws-worker.cjs), started by the install command as a systemd unit.
// It long-polls its (run, VM) job queue, runs the one job it is given — EBS
// direct sources for the snapshot's volumes, the repository's S3 store, the
// passphrase from SSM / Secrets Manager — and reports on the status queue:
// progress at most every 10 s, a heartbeat every 30 s, then the result. When
// access is revoked (queues deleted, grants removed) it can do nothing more,
// and it exits; the instance is terminated right after.

import { DeleteMessageCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { EBSClient } from '@aws-sdk/client-ebs';
import { SSMClient } from '@aws-sdk/client-ssm';
import type { BackupResult, JobProgress } from '../ports/cloud.js';
import type { BlockSource } from '../ports/block-source.js';
import type { ObjectStore } from '../ports/object-store.js';
import type { KeyRef } from '../core/config.js';
import { toError } from '../core/errors.js';
import { isAwsNotFound } from './aws-errors.js';
import { assumeRoleCredentials } from './clients.js';
import type { JobMessage, StatusMessage } from './sqs-channel.js';
import { backupRequestForJob } from '../../worker/job.js';
import type { RepositorySecret } from '../../worker/crypto.js';

export interface AgentDeps {
  sqs: SQSClient;
  statusQueueUrl: string;
  /** Opens one disk of the job's snapshot set. */
  openSource(snapshotId: string, sizeBytes: number, msg: JobMessage): Promise<BlockSource>;
  openStore(url: string): Promise<ObjectStore>;
  /** What opens the repository: a passphrase, or the KMS key that wraps its master key. */
  secret(ref: KeyRef): Promise<RepositorySecret>;
  /** The data mover (injected so tests can run the agent over an in-memory one). */
  backup?: (store: ObjectStore, secret: RepositorySecret, req: Parameters<typeof import('../../worker/backup.js').backupVm>[1]) => Promise<BackupResult>;
  heartbeatMs?: number;
  progressMs?: number;
  now?: () => number;
}

async function defaultBackup(store: ObjectStore, secret: RepositorySecret, req: Parameters<typeof import('../../worker/backup.js').backupVm>[1]): Promise<BackupResult> {
  const [{ openOrInitRepository }, { backupVm }] = await Promise.all([import('../../worker/repository.js'), import('../../worker/backup.js')]);
  const repo = await openOrInitRepository(store, secret, { incremental: req.disks.some((d) => d.parentSnapshotRef) });
  try {
    return await backupVm(repo, req);
  } finally {
    await repo.close();
  }
}

/** Long-polls the job queue until a job arrives, or gives up after `idleMs` (the queue was never used, or was deleted). */
export async function receiveJob(sqs: SQSClient, jobQueueUrl: string, opts: { idleMs?: number; now?: () => number } = {}): Promise<JobMessage | undefined> {
  const now = opts.now ?? Date.now;
  const until = now() + (opts.idleMs ?? 2 * 3600_000);
  while (now() < until) {
    let res;
    try {
      res = await sqs.send(new ReceiveMessageCommand({ QueueUrl: jobQueueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 20, VisibilityTimeout: 300 }));
    } catch (e) {
      if (isAwsNotFound(e)) return undefined; // revoked before a job came
      throw e;
    }
    for (const m of res.Messages ?? []) {
      await sqs.send(new DeleteMessageCommand({ QueueUrl: jobQueueUrl, ReceiptHandle: m.ReceiptHandle })).catch(() => undefined);
      try {
        const body = JSON.parse(m.Body ?? '') as JobMessage;
        if (body?.type === 'job' && body.job?.jobId) return body;
      } catch {
        // not a job: dropped
      }
    }
  }
  return undefined;
}

export async function runAwsJob(msg: JobMessage, deps: AgentDeps): Promise<BackupResult | undefined> {
  const { job } = msg;
  const now = deps.now ?? Date.now;
  let seq = 0;
  let latest: JobProgress = { bytesDone: 0, bytesTotal: job.disks.reduce((n, d) => n + d.sizeBytes, 0), bytesPerSecond: 0 };
  let lastSent = 0;
  let sending: Promise<unknown> = Promise.resolve();
  const send = (status: StatusMessage['status']) => {
    const body: StatusMessage = { type: 'status', jobId: job.jobId, seq: seq++, status };
    // One report in flight at a time; a lost progress report is not an error (the next one replaces it).
    const terminal = status.state === 'succeeded' || status.state === 'failed';
    const once = () => deps.sqs.send(new SendMessageCommand({ QueueUrl: deps.statusQueueUrl, MessageBody: JSON.stringify(body) }));
    // A result is retried (a lost "succeeded" would turn a made restore point into a timeout and a
    // cleanup); a lost progress report is not (the next one replaces it).
    const attempt = async () => {
      for (let i = 1; ; i++) {
        try {
          return await once();
        } catch (e) {
          if (!terminal || i >= 5) return undefined;
          await new Promise((r) => setTimeout(r, Math.random() * 250 * 2 ** i));
        }
      }
    };
    sending = sending.then(attempt);
    return sending;
  };
  const report = (p: JobProgress, force = false) => {
    latest = p;
    if (!force && now() - lastSent < (deps.progressMs ?? 10_000)) return;
    lastSent = now();
    void send({ state: 'running', progress: latest, updatedAt: new Date(now()).toISOString() });
  };
  const heartbeat = setInterval(() => report(latest, true), deps.heartbeatMs ?? 30_000);
  heartbeat.unref();
  const sources: BlockSource[] = [];
  try {
    report(latest, true);
    const secret = await deps.secret(job.repository.key);
    const store = await deps.openStore(job.repository.url);
    const req = await backupRequestForJob(job, (d) => deps.openSource(d.snapshotId, d.sizeBytes, msg), sources, (p) => report(p));
    const result = await (deps.backup ?? defaultBackup)(store, secret, req);
    clearInterval(heartbeat);
    await send({ state: 'succeeded', result, updatedAt: new Date(now()).toISOString() });
    return result;
  } catch (e) {
    const err = toError(e);
    clearInterval(heartbeat);
    await send({ state: 'failed', error: { name: err.name, message: err.message }, updatedAt: new Date(now()).toISOString() });
    return undefined;
  } finally {
    clearInterval(heartbeat);
    await sending;
    await Promise.all(sources.map((s) => s.close().catch(() => undefined)));
  }
}

/** The bundle's main: configuration comes from the environment the install command set. */
export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const region = env.AWS_REGION!;
  const jobQueueUrl = env.TENDER_JOB_QUEUE_URL!;
  const statusQueueUrl = env.TENDER_STATUS_QUEUE_URL!;
  if (!region || !jobQueueUrl || !statusQueueUrl) {
    process.stderr.write('tender-aws-worker: AWS_REGION, TENDER_JOB_QUEUE_URL and TENDER_STATUS_QUEUE_URL must be set (the install command sets them)\n');
    return 2;
  }
  const sqs = new SQSClient({ region });
  const msg = await receiveJob(sqs, jobQueueUrl);
  if (!msg) {
    process.stderr.write('tender-aws-worker: no job arrived (or access was revoked); exiting\n');
    return 0;
  }
  const [{ openEbsSource }, { openStoreFromUrl }, { resolveAwsRepositorySecret }] = await Promise.all([
    import('../../worker/sources/ebs.js'),
    import('../../worker/store-from-url.js'),
    import('./repository-key.js'),
  ]);
  // 15-minute sessions, renewed as they run out: what a worker holds stays valid minutes after revoke, not an hour.
  const credentials = msg.aws.snapshotRole ? assumeRoleCredentials({ ...msg.aws.snapshotRole, sessionName: `tender-worker-${env.TENDER_WORKER_ID ?? 'x'}`, durationSeconds: 900 }) : undefined;
  const ebs = new EBSClient({
    region: msg.aws.region,
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 10_000, httpsAgent: { keepAlive: true, maxSockets: 128 } },
    ...(credentials ? { credentials } : {}),
  });
  const ssm = new SSMClient({ region });
  const result = await runAwsJob(msg, {
    sqs,
    statusQueueUrl,
    openSource: (snapshotId, sizeBytes) => openEbsSource({ client: ebs, snapshotId, sizeBytes }),
    openStore: (url) => openStoreFromUrl(url),
    secret: (ref) => resolveAwsRepositorySecret(ref, { ssm: () => ssm }),
  });
  return result ? 0 : 1;
}
