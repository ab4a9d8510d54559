// The worker ↔ pipeline channel on AWS, and revocation.
//
// Why SQS and not Step Functions task tokens: the state machine polls
// (StartBackup → Wait → CheckBackup), the same shape the local runner and the
// Azure orchestrator use, so one ASL file serves all three; a per-(run, VM)
// queue pair is a credential that can be ended (DeleteQueue), which a task
// token cannot; and private workers already need the sqs endpoint.
//
// - startJob: grants the worker read access to exactly the job's snapshots
//   (tag tender:reader=<worker instance ARN>, which the worker role's EBS
//   permission is conditioned on), puts the job on the job queue, and records
//   it under jobs/<jobId>.json in the config bucket.
// - getJobStatus: drains the status queue (progress, heartbeats, result), keeps
//   the newest status in jobs/<jobId>.json, and reports a worker silent for
//   longer than the heartbeat timeout — or whose instance is gone — as failed
//   with WorkerFailedError.
// - revokeAccess: takes the tender:reader grants off the snapshots, deletes the
//   staged objects (the presigned bundle URL then answers 404/403 before it
//   even expires) and deletes the queue pair — each tried even when another
//   fails; then the worker's credentials can no longer read a snapshot, fetch
//   the bundle, or talk to the pipeline.

import {
  DeleteMessageBatchCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type Message,
} from '@aws-sdk/client-sqs';
import { CreateTagsCommand, DeleteTagsCommand, DescribeInstancesCommand, DescribeSnapshotsCommand } from '@aws-sdk/client-ec2';
import type { Access, JobStatus, WorkerChannel, WorkerJob, WorkerRef } from '../ports/cloud.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import { silentLogger } from '../core/logger.js';
import { TransientError, WorkerFailedError, failureCollector, isRetryable, toError } from '../core/errors.js';
import { awsCall, isAwsNotFound, normaliseAwsError } from './aws-errors.js';
import type { AssumedRole, ClientsFor } from './clients.js';
import { TAG, fromAwsTags, queueNamesOf, runKeys, safeId } from './naming.js';
import { deleteQueue, ensureQueues, noGrants, readGrants, updateGrants, type ConfigBucket, type RunQueues } from './run-resources.js';
import { instanceArn } from './ec2-workers.js';

/** What travels on the job queue. */
export interface JobMessage {
  type: 'job';
  job: WorkerJob;
  aws: {
    region: string;
    /** Cross-account: the role the worker assumes to read the production account's snapshots. */
    snapshotRole?: AssumedRole;
  };
}

/** What the worker sends on the status queue. */
export interface StatusMessage {
  type: 'status';
  jobId: string;
  /** Increases with every message of a job: the newest wins (standard queues do not keep order). */
  seq: number;
  status: JobStatus;
}

export interface JobRecord {
  jobId: string;
  runId: string;
  vmId: string;
  workerId: string;
  region: string;
  queues: RunQueues;
  status: JobStatus;
  seq: number;
  /** When the worker last said anything (ms since epoch). */
  heardAt: number;
}

export interface SqsChannelOptions {
  /** Backup-account clients: queues and the worker instance. */
  clients: Pick<ClientsFor, 'sqs' | 'ec2'>;
  /** Clients acting where the snapshots are (the production account's role, or the same as `clients`). */
  snapshotClients: Pick<ClientsFor, 'ec2'>;
  /** The production role the worker assumes to read snapshots (cross-account), sent in its job. */
  snapshotRole?: AssumedRole;
  configBucket: ConfigBucket;
  namePrefix: string;
  regions: string[];
  /** A running job silent for longer than this has failed (the agent beats every 30 s). */
  heartbeatTimeoutMs?: number;
  clock?: Clock;
  logger?: Logger;
  /** Attempts per revoke action before it gives up (each retried with a pause). */
  revokeAttempts?: number;
}

export const jobKeyOf = (jobId: string) => `jobs/${safeId(jobId)}.json`;

const TERMINAL = new Set(['succeeded', 'failed']);

export function createSqsChannel(opts: SqsChannelOptions): WorkerChannel & Access {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger;
  const heartbeatMs = opts.heartbeatTimeoutMs ?? 5 * 60_000;
  const bucket = opts.configBucket;

  async function workerArnOf(ref: WorkerRef, runId: string, vmId: string): Promise<string> {
    const g = await readGrants(bucket, runId, vmId);
    if (g.workerArn?.endsWith(`/${ref.workerId}`)) return g.workerArn;
    const res = await awsCall(`ec2:DescribeInstances ${ref.workerId}`, () => opts.clients.ec2(ref.region).send(new DescribeInstancesCommand({ InstanceIds: [ref.workerId] })));
    const owner = res.Reservations?.[0]?.OwnerId;
    if (!owner) throw new WorkerFailedError(`worker ${ref.workerId} was not found in ${ref.region}`);
    return instanceArn(ref.region, owner, ref.workerId);
  }

  async function instanceState(ref: WorkerRef): Promise<string | undefined> {
    try {
      const res = await opts.clients.ec2(ref.region).send(new DescribeInstancesCommand({ InstanceIds: [ref.workerId] }));
      return res.Reservations?.[0]?.Instances?.[0]?.State?.Name ?? 'terminated';
    } catch (e) {
      if (isAwsNotFound(e)) return 'terminated';
      throw normaliseAwsError(e, `ec2:DescribeInstances ${ref.workerId}`);
    }
  }

  /** Retries one revoke action until it holds or the attempts run out (throws the last error). */
  async function holds<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const attempts = opts.revokeAttempts ?? 4;
    for (let i = 1; ; i++) {
      try {
        return await fn();
      } catch (e) {
        if (i >= attempts || !isRetryable(e)) throw e;
        logger.warn('revoke action failed; retrying', { what, attempt: i, error: toError(e).message });
        await clock.sleep(Math.min(8000, 500 * 2 ** i));
      }
    }
  }

  async function removeReaderTags(region: string, snapshotIds: string[], readerArn: string): Promise<string[]> {
    const ec2 = opts.snapshotClients.ec2(region);
    const done: string[] = [];
    for (const id of snapshotIds) {
      try {
        // With its value given, DeleteTags removes the tag only where it still names this worker.
        await ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: TAG.reader, Value: readerArn }] }));
        done.push(id);
      } catch (e) {
        if (isAwsNotFound(e)) continue;
        throw normaliseAwsError(e, `ec2:DeleteTags ${TAG.reader} on ${id}`, 'the role needs ec2:DeleteTags on Tender-tagged snapshots (tag key tender:reader)');
      }
    }
    return done;
  }

  return {
    async startJob(worker: WorkerRef, job: WorkerJob): Promise<void> {
      const key = jobKeyOf(job.jobId);
      const existing = await bucket.getJson<JobRecord>(key);
      if (existing) return;
      const region = worker.region;
      const queues = await ensureQueues(opts.clients.sqs(region), opts.namePrefix, job.runId, job.vm.vmId, {});

      // The EBS direct grant: only this worker instance may read these snapshots, until revoke.
      const readerArn = await workerArnOf(worker, job.runId, job.vm.vmId);
      const snapshotIds = [...new Set(job.disks.flatMap((d) => [d.snapshotId, ...(d.parentSnapshotId ? [d.parentSnapshotId] : [])]))];
      await updateGrants(bucket, job.runId, job.vm.vmId, (g) => {
        g.region = region;
        g.queues = queues;
        g.workerArn = readerArn;
        g.snapshotReads = [...g.snapshotReads.filter((r) => !(r.region === region && r.readerArn === readerArn)), { region, readerArn, snapshotIds }];
      });
      await awsCall(
        `ec2:CreateTags ${TAG.reader} on the snapshots of job ${job.jobId}`,
        () => opts.snapshotClients.ec2(region).send(new CreateTagsCommand({ Resources: snapshotIds, Tags: [{ Key: TAG.reader, Value: readerArn }] })),
        'the start-backup role (or the production account role) needs ec2:CreateTags on Tender-tagged snapshots for the tag key tender:reader',
      );

      const message: JobMessage = { type: 'job', job, aws: { region, ...(opts.snapshotRole ? { snapshotRole: opts.snapshotRole } : {}) } };
      await awsCall(`sqs:SendMessage to ${queues.job}`, () => opts.clients.sqs(region).send(new SendMessageCommand({ QueueUrl: queues.jobUrl, MessageBody: JSON.stringify(message) })));
      const now = clock.now();
      const record: JobRecord = {
        jobId: job.jobId,
        runId: job.runId,
        vmId: job.vm.vmId,
        workerId: worker.workerId,
        region,
        queues,
        status: { state: 'queued', updatedAt: now.toISOString() },
        seq: -1,
        heardAt: now.getTime(),
      };
      await bucket.putJson(key, record);
    },

    async getJobStatus(worker: WorkerRef, jobId: string): Promise<JobStatus> {
      const key = jobKeyOf(jobId);
      const rec = await bucket.getJson<JobRecord>(key);
      const failed = (message: string): JobStatus => ({ state: 'failed', error: { name: WorkerFailedError.name, message }, updatedAt: clock.now().toISOString() });
      if (!rec) return failed(`job ${jobId} was never handed to worker ${worker.workerId} (no jobs/${safeId(jobId)}.json) — run again`);
      if (TERMINAL.has(rec.status.state)) return rec.status;

      const sqs = opts.clients.sqs(rec.region);
      const received: Message[] = [];
      let changed = false;
      try {
        for (let page = 0; page < 10; page++) {
          const res = await sqs.send(
            new ReceiveMessageCommand({ QueueUrl: rec.queues.statusUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 30, MessageSystemAttributeNames: ['SentTimestamp'] }),
          );
          const msgs = res.Messages ?? [];
          received.push(...msgs);
          if (msgs.length < 10) break;
        }
      } catch (e) {
        if (isAwsNotFound(e)) return failed(`the job channel of ${jobId} is gone (access was revoked) before worker ${worker.workerId} reported a result`);
        throw normaliseAwsError(e, `sqs:ReceiveMessage ${rec.queues.status}`);
      }
      for (const m of received) {
        let body: StatusMessage;
        try {
          body = JSON.parse(m.Body ?? '') as StatusMessage;
        } catch {
          continue;
        }
        if (body?.type !== 'status' || body.jobId !== jobId || !body.status) continue;
        const sent = Number(m.Attributes?.SentTimestamp ?? clock.now().getTime());
        if (sent > rec.heardAt) ((rec.heardAt = sent), (changed = true));
        // A result is final whatever its seq; otherwise the newest report wins.
        if (TERMINAL.has(rec.status.state)) continue;
        if (TERMINAL.has(body.status.state) || body.seq > rec.seq) {
          rec.status = body.status;
          rec.seq = body.seq;
          changed = true;
        }
      }
      if (changed) await bucket.putJson(key, rec);
      // Deleted only once the newest status is safely recorded.
      for (let i = 0; i < received.length; i += 10) {
        const chunk = received.slice(i, i + 10);
        await awsCall(`sqs:DeleteMessageBatch ${rec.queues.status}`, () =>
          sqs.send(new DeleteMessageBatchCommand({ QueueUrl: rec.queues.statusUrl, Entries: chunk.map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle! })) })),
        ).catch((e) => logger.warn('could not delete status messages; they are read again and ignored', { error: toError(e).message }));
      }
      if (TERMINAL.has(rec.status.state)) return rec.status;

      const state = await instanceState({ workerId: rec.workerId, region: rec.region });
      if (state !== 'running' && state !== 'pending') return failed(`worker ${rec.workerId} is ${state} and did not report a result for job ${jobId}`);
      const silentMs = clock.now().getTime() - rec.heardAt;
      if (silentMs > heartbeatMs) {
        return failed(`worker ${rec.workerId} has not reported for ${Math.round(silentMs / 1000)}s (heartbeat timeout ${Math.round(heartbeatMs / 1000)}s) — it died or lost its network; see its journal (journalctl -u tender-agent-*) if it still runs`);
      }
      return rec.status;
    },

    async revokeAccess({ runId, vmId }): Promise<{ revoked: string[] }> {
      const revoked: string[] = [];
      // Every action is tried even when another fails; snapshot reads first, as they read whole disks.
      const failures = failureCollector();
      // Without the record of grants (S3 failing), what can be found without it is still revoked —
      // the reader tags on the run's own snapshots, the staged objects and the queues, by their
      // names — and the step fails, so its retry (reading the record) revokes the parent's grants too.
      const g = (await failures.attempt('read the record of grants', () => readGrants(bucket, runId, vmId))) ?? noGrants(runId, vmId);
      const names = queueNamesOf(opts.namePrefix, runId, vmId);
      const regions = [...new Set([g.region, ...opts.regions].filter((x): x is string => !!x))];

      for (const r of g.snapshotReads) {
        await failures.attempt(`remove snapshot grants in ${r.region}`, async () => {
          const ids = await holds(`remove snapshot grants in ${r.region}`, () => removeReaderTags(r.region, r.snapshotIds, r.readerArn));
          if (ids.length > 0) revoked.push(`EBS direct read of ${ids.join(', ')} by ${r.readerArn}`);
        });
      }
      // Grants whose record was lost: any reader tag left on this run's own snapshots.
      for (const region of regions) {
        await failures.attempt(`remove leftover snapshot grants in ${region}`, async () => {
          const snaps = await holds(`find granted snapshots in ${region}`, () =>
            awsCall(`ec2:DescribeSnapshots in ${region}`, () =>
              opts.snapshotClients.ec2(region).send(
                new DescribeSnapshotsCommand({ OwnerIds: ['self'], Filters: [{ Name: `tag:${TAG.run}`, Values: [runId] }, { Name: `tag:${TAG.vm}`, Values: [vmId] }, { Name: 'tag-key', Values: [TAG.reader] }] }),
              ),
            ),
          );
          for (const s of snaps.Snapshots ?? []) {
            const reader = fromAwsTags(s.Tags)[TAG.reader];
            if (!reader || !s.SnapshotId) continue;
            await failures.attempt(`remove snapshot grant on ${s.SnapshotId}`, async () => {
              const ids = await holds(`remove snapshot grant on ${s.SnapshotId}`, () => removeReaderTags(region, [s.SnapshotId!], reader));
              if (ids.length > 0) revoked.push(`EBS direct read of ${s.SnapshotId} by ${reader}`);
            });
          }
        });
      }

      const prefix = runKeys(runId, vmId).staging;
      await failures.attempt('delete staged objects', () =>
        holds('delete staged objects', async () => {
          const gone = await bucket.deletePrefix(prefix);
          for (const k of gone) revoked.push(`staged object s3://${bucket.bucket}/${k}`);
          // Holds only when nothing is left (a put racing the delete is caught here).
          if ((await bucket.list(prefix)).length > 0) throw new TransientError(`objects are still staged under s3://${bucket.bucket}/${prefix}`);
        }),
      );

      for (const region of regions) {
        for (const name of [names.job, names.status]) {
          await failures.attempt(`delete queue ${name} in ${region}`, async () => {
            if (await holds(`delete queue ${name}`, () => deleteQueue(opts.clients.sqs(region), name))) revoked.push(`job channel sqs:${region}:${name}`);
          });
        }
      }

      // The record of grants is cleared only once all of them are gone: a retry revokes the rest.
      failures.throwIfAny(`not every grant of run ${runId} on VM ${vmId} could be revoked; revoking is retried`);
      if (g.staged.length > 0 || g.snapshotReads.length > 0 || g.queues) {
        await updateGrants(bucket, runId, vmId, (x) => {
          x.staged = [];
          x.snapshotReads = [];
          delete x.queues;
        });
      }
      return { revoked };
    },
  };
}
