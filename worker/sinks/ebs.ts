// BlockSink that restores into a new EBS snapshot through the EBS direct APIs
// (StartSnapshot / PutSnapshotBlock / CompleteSnapshot). A volume is then
// created from the snapshot by the caller.
//
// abort(): CompleteSnapshot is never called, so no completed (usable) snapshot
// is left. The started snapshot stays `pending` until EBS cancels it on its own
// after `timeoutMinutes` without completion (StartSnapshot's Timeout, 60 min by
// default here); the EBS direct APIs cannot delete it. To remove it at once,
// pass `deleteSnapshot` (e.g. EC2 DeleteSnapshot from shared/aws): abort calls
// it and throws, naming the snapshot, if that fails.

import { randomUUID } from 'node:crypto';
import { CompleteSnapshotCommand, EBSClient, PutSnapshotBlockCommand, StartSnapshotCommand } from '@aws-sdk/client-ebs';
import type { BlockSink } from '../../shared/ports/block-source.js';
import { ConfigError, CorruptObjectError, SnapshotFailedError, toError } from '../../shared/core/errors.js';
import {
  DEFAULT_EBS_RETRY,
  EBS_BLOCK_SIZE,
  defaultEbsClient,
  ebsRequest,
  sha256Base64,
  type EbsRetryOptions,
} from '../sources/ebs.js';
import { createWriteBehind, isAllZero } from '../sources/retry.js';

function isConflictingBlockUpdate(thrown: unknown): boolean {
  const err = toError(thrown) as Error & { Reason?: string };
  return err.name === 'ValidationException' && err.Reason === 'CONFLICTING_BLOCK_UPDATE';
}

export interface EbsSinkOptions {
  client?: EBSClient;
  volumeSizeGiB: number;
  /**
   * Blocks not written read as the parent's. Without a parent they read as
   * zeros, so all-zero blocks are skipped (fewer billable puts).
   */
  parentSnapshotId?: string;
  tags?: Record<string, string>;
  description?: string;
  /** Idempotency token for StartSnapshot (a retried start returns the same snapshot). */
  clientToken?: string;
  /** Minutes after which EBS cancels the snapshot if it is not completed. */
  timeoutMinutes?: number;
  encrypted?: boolean;
  kmsKeyArn?: string;
  /** PutSnapshotBlock requests in flight at once. */
  concurrency?: number;
  requestTimeoutMs?: number;
  retry?: EbsRetryOptions;
  /** Deletes a started snapshot on abort (EC2 DeleteSnapshot); without it EBS cancels it after timeoutMinutes. */
  deleteSnapshot?: (snapshotId: string) => Promise<void>;
}

export interface EbsSink extends BlockSink {
  readonly snapshotId: string;
}

export async function createEbsSink(opts: EbsSinkOptions): Promise<EbsSink> {
  if (!Number.isInteger(opts.volumeSizeGiB) || opts.volumeSizeGiB < 1) {
    throw new ConfigError(`createEbsSink: volumeSizeGiB must be a whole number ≥ 1 (got ${opts.volumeSizeGiB})`);
  }
  const client = opts.client ?? defaultEbsClient();
  const timeoutMs = opts.requestTimeoutMs ?? 30_000;
  const retry = { ...DEFAULT_EBS_RETRY, ...opts.retry };
  const clientToken = opts.clientToken ?? randomUUID();
  const blockSize = EBS_BLOCK_SIZE;
  const blockCount = (opts.volumeSizeGiB * 1024 ** 3) / blockSize;

  const call = <T>(what: string, fn: (signal: AbortSignal) => Promise<T>, retryAlso?: (e: Error) => boolean): Promise<T> =>
    ebsRequest(what, fn, { timeoutMs, retry, retryAlso });

  const started = await call('EBS StartSnapshot', (signal) =>
    client.send(
      new StartSnapshotCommand({
        VolumeSize: opts.volumeSizeGiB,
        ParentSnapshotId: opts.parentSnapshotId,
        Tags: opts.tags ? Object.entries(opts.tags).map(([Key, Value]) => ({ Key, Value })) : undefined,
        Description: opts.description,
        ClientToken: clientToken,
        Timeout: opts.timeoutMinutes ?? 60,
        Encrypted: opts.encrypted,
        KmsKeyArn: opts.kmsKeyArn,
      }),
      { abortSignal: signal },
    ),
  );
  if (!started.SnapshotId) throw new SnapshotFailedError('EBS StartSnapshot returned no snapshot id; try the restore again');
  if (started.Status === 'error') throw new SnapshotFailedError(`EBS snapshot ${started.SnapshotId} went into the error state right after StartSnapshot; try the restore again`);
  const snapshotId = started.SnapshotId;

  const writes = createWriteBehind(opts.concurrency ?? 64);
  // One bit per block: counts distinct blocks for CompleteSnapshot and refuses a
  // second write of a block (EBS rejects concurrent puts of one block).
  const written = new Uint8Array(Math.ceil(blockCount / 8));
  let changedBlocksCount = 0;
  let state: 'open' | 'finished' | 'aborted' = 'open';

  const assertOpen = (op: string) => {
    if (state !== 'open') throw new ConfigError(`EBS sink for ${snapshotId}: ${op} after ${state === 'finished' ? 'finish' : 'abort'}; create a new sink`);
  };

  async function put(index: number, data: Uint8Array): Promise<void> {
    const checksum = sha256Base64(data);
    const what = `EBS PutSnapshotBlock ${snapshotId} block ${index}`;
    await call(
      what,
      async (signal) => {
        const res = await client.send(
          new PutSnapshotBlockCommand({
            SnapshotId: snapshotId,
            BlockIndex: index,
            BlockData: data,
            DataLength: data.byteLength,
            Checksum: checksum,
            ChecksumAlgorithm: 'SHA256',
          }),
          { abortSignal: signal },
        );
        if (res.Checksum && res.Checksum !== checksum) {
          throw new CorruptObjectError(`ebs:${snapshotId}/block/${index}`, `EBS stored a block whose checksum (${res.Checksum}) differs from what was sent (${checksum}); the write was retried and kept failing — restore again`);
        }
      },
      // A put cut by our timeout may still land while its retry runs; EBS then
      // reports a conflicting update of the same block, which the retry resolves.
      (e) => e instanceof CorruptObjectError || isConflictingBlockUpdate(e),
    );
  }

  return {
    snapshotId,
    blockSize,
    // Over a parent, unwritten blocks read as the parent's: restore writes zero blocks explicitly.
    hasBase: !!opts.parentSnapshotId,

    async writeBlock(index: number, data: Uint8Array) {
      assertOpen('writeBlock');
      if (!Number.isInteger(index) || index < 0 || index >= blockCount) {
        throw new RangeError(`EBS sink for ${snapshotId}: block ${index} is outside the ${opts.volumeSizeGiB} GiB volume`);
      }
      if (data.byteLength > blockSize) {
        throw new RangeError(`EBS sink for ${snapshotId}: block ${index} has ${data.byteLength} bytes, more than the ${blockSize}-byte EBS block`);
      }
      const bit = 1 << (index & 7);
      if (written[index >> 3] & bit) throw new ConfigError(`EBS sink for ${snapshotId}: block ${index} written twice; each block must be written once`);
      if (!opts.parentSnapshotId && isAllZero(data)) return;
      written[index >> 3] |= bit;
      changedBlocksCount++;
      // A copy: the caller reuses `data` once we return, while the put goes on in
      // the background. EBS takes whole 512 KiB blocks only: a short tail stays zeros.
      const block = new Uint8Array(blockSize);
      block.set(data);
      await writes.submit(() => put(index, block));
    },

    async finish() {
      assertOpen('finish');
      await writes.drain();
      const done = await call(`EBS CompleteSnapshot ${snapshotId}`, (signal) =>
        client.send(new CompleteSnapshotCommand({ SnapshotId: snapshotId, ChangedBlocksCount: changedBlocksCount }), { abortSignal: signal }),
      );
      state = 'finished';
      if (done.Status === 'error') {
        throw new SnapshotFailedError(`EBS snapshot ${snapshotId} went into the error state on CompleteSnapshot; delete it and restore again`);
      }
      // `pending` is normal here: EBS finishes the snapshot asynchronously; wait
      // for `completed` (EC2 DescribeSnapshots) before creating a volume from it.
      return snapshotId;
    },

    async abort() {
      if (state !== 'open') return;
      state = 'aborted';
      await writes.settle();
      if (opts.deleteSnapshot) {
        try {
          await opts.deleteSnapshot(snapshotId);
        } catch (thrown) {
          throw new SnapshotFailedError(
            `EBS snapshot ${snapshotId} was abandoned but could not be deleted (${toError(thrown).message}); EBS cancels it after ${opts.timeoutMinutes ?? 60} minutes, or delete it by hand`,
            { cause: thrown },
          );
        }
      }
    },
  };
}
