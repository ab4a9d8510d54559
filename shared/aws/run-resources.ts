// What a run makes for one VM besides its snapshots and its worker: the
// per-(run, VM) SQS queue pair (the worker's job channel), the objects staged
// for it in the config bucket, and the record of the grants handed out — so
// revoke ends exactly those, and a re-invoked step reuses them.

import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { CreateQueueCommand, DeleteQueueCommand, GetQueueUrlCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { NotFoundError, TransientError } from '../core/errors.js';
import { awsCall, awsErrorName, isAwsNotFound, normaliseAwsError } from './aws-errors.js';
import { TAG, queueNamesOf, runKeys } from './naming.js';

export interface Grants {
  runId: string;
  vmId: string;
  region?: string;
  workerArn?: string;
  staged: string[];
  queues?: { job: string; status: string; jobUrl: string; statusUrl: string };
  /** Snapshots tagged readable by the worker, per Region. */
  snapshotReads: Array<{ region: string; snapshotIds: string[]; readerArn: string }>;
}

export interface ConfigBucket {
  bucket: string;
  getJson<T>(key: string): Promise<T | undefined>;
  putJson(key: string, value: unknown): Promise<void>;
  copy(fromKey: string, toKey: string): Promise<void>;
  list(prefix: string): Promise<string[]>;
  deletePrefix(prefix: string): Promise<string[]>;
}

const BUCKET_FIX = (bucket: string) => `the step's role needs s3:GetObject / s3:PutObject / s3:ListBucket on the config bucket ${bucket} (under runs/, staging/, catalog/, worker/)`;

async function readBody(body: unknown): Promise<string> {
  const b = body as { transformToString?: () => Promise<string> } | undefined;
  if (b?.transformToString) return b.transformToString();
  return String(body ?? '');
}

export function createConfigBucket(opts: { s3: S3Client; bucket: string }): ConfigBucket {
  const { s3, bucket } = opts;
  return {
    bucket,
    async getJson<T>(key: string): Promise<T | undefined> {
      try {
        const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return JSON.parse(await readBody(res.Body)) as T;
      } catch (e) {
        if (isAwsNotFound(e)) return undefined;
        throw normaliseAwsError(e, `s3:GetObject s3://${bucket}/${key}`, BUCKET_FIX(bucket));
      }
    },
    async putJson(key, value) {
      await awsCall(
        `s3:PutObject s3://${bucket}/${key}`,
        () => s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: JSON.stringify(value, null, 2), ContentType: 'application/json' })),
        BUCKET_FIX(bucket),
      );
    },
    async copy(fromKey, toKey) {
      try {
        await s3.send(new CopyObjectCommand({ Bucket: bucket, Key: toKey, CopySource: `${bucket}/${fromKey.split('/').map(encodeURIComponent).join('/')}` }));
      } catch (e) {
        if (isAwsNotFound(e)) {
          throw new NotFoundError(`the worker bundle s3://${bucket}/${fromKey} is missing — build and upload it (docs/aws.md, "Worker bundle")`, { cause: e });
        }
        throw normaliseAwsError(e, `s3:CopyObject s3://${bucket}/${fromKey} → ${toKey}`, BUCKET_FIX(bucket));
      }
    },
    async list(prefix) {
      const keys: string[] = [];
      let ContinuationToken: string | undefined;
      do {
        const page = await awsCall(`s3:ListObjectsV2 s3://${bucket}/${prefix}`, () => s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken })), BUCKET_FIX(bucket));
        for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
        ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (ContinuationToken);
      return keys;
    },
    async deletePrefix(prefix) {
      const keys = await this.list(prefix);
      for (let i = 0; i < keys.length; i += 1000) {
        const chunk = keys.slice(i, i + 1000);
        const res = await awsCall(
          `s3:DeleteObjects under s3://${bucket}/${prefix}`,
          () => s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: chunk.map((Key) => ({ Key })), Quiet: true } })),
          `the role needs s3:DeleteObject on s3://${bucket}/staging/*`,
        );
        const failed = (res.Errors ?? []).filter((x) => x.Code !== 'NoSuchKey');
        if (failed.length > 0) throw new TransientError(`could not delete ${failed.length} staged object(s) under s3://${bucket}/${prefix} (${failed[0]!.Code}: ${failed[0]!.Message}) — retried`);
      }
      return keys;
    },
  };
}

/** The record of a run's grants on one VM before anything was granted. */
export function noGrants(runId: string, vmId: string): Grants {
  return { runId, vmId, staged: [], snapshotReads: [] };
}

export async function readGrants(bucket: ConfigBucket, runId: string, vmId: string): Promise<Grants> {
  return (await bucket.getJson<Grants>(runKeys(runId, vmId).grants)) ?? noGrants(runId, vmId);
}

export async function updateGrants(bucket: ConfigBucket, runId: string, vmId: string, change: (g: Grants) => void): Promise<Grants> {
  const g = await readGrants(bucket, runId, vmId);
  change(g);
  await bucket.putJson(runKeys(runId, vmId).grants, g);
  return g;
}

export interface RunQueues {
  job: string;
  status: string;
  jobUrl: string;
  statusUrl: string;
}

const SQS_FIX = 'the step\'s role needs sqs:CreateQueue, sqs:GetQueueUrl, sqs:TagQueue (and sqs:DeleteQueue to revoke) on the deployment\'s queues (<prefix>-*)';

/** Creates (or finds) the queue pair of a (run, VM). CreateQueue is idempotent for equal attributes. */
export async function ensureQueues(sqs: SQSClient, prefix: string, runId: string, vmId: string, tags: Record<string, string>): Promise<RunQueues> {
  const names = queueNamesOf(prefix, runId, vmId);
  const make = async (name: string, waitSeconds: string): Promise<string> => {
    try {
      const res = await sqs.send(
        new CreateQueueCommand({
          QueueName: name,
          Attributes: { MessageRetentionPeriod: '172800', VisibilityTimeout: '300', ReceiveMessageWaitTimeSeconds: waitSeconds, SqsManagedSseEnabled: 'true' },
          tags: { ...tags, [TAG.run]: runId, [TAG.vm]: vmId },
        }),
      );
      return res.QueueUrl!;
    } catch (e) {
      if (awsErrorName(e) === 'AWS.SimpleQueueService.QueueDeletedRecently' || awsErrorName(e) === 'QueueDeletedRecently') {
        throw new TransientError(`queue ${name} was deleted less than 60 s ago (its run was revoked); SQS refuses to recreate it yet — retried`, { cause: e });
      }
      throw normaliseAwsError(e, `sqs:CreateQueue ${name}`, SQS_FIX);
    }
  };
  return { job: names.job, status: names.status, jobUrl: await make(names.job, '20'), statusUrl: await make(names.status, '0') };
}

export async function queueUrl(sqs: SQSClient, name: string): Promise<string | undefined> {
  try {
    return (await sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl;
  } catch (e) {
    if (isAwsNotFound(e)) return undefined;
    throw normaliseAwsError(e, `sqs:GetQueueUrl ${name}`, SQS_FIX);
  }
}

/** Deletes a queue; true when it existed. */
export async function deleteQueue(sqs: SQSClient, name: string): Promise<boolean> {
  const url = await queueUrl(sqs, name);
  if (!url) return false;
  try {
    await sqs.send(new DeleteQueueCommand({ QueueUrl: url }));
    return true;
  } catch (e) {
    if (isAwsNotFound(e)) return false;
    throw normaliseAwsError(e, `sqs:DeleteQueue ${name}`, SQS_FIX);
  }
}
