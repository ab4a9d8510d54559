// BlockSource over an EBS snapshot through the EBS direct APIs
// (ListSnapshotBlocks / ListChangedBlocks / GetSnapshotBlock).
//
// Why it looks the way it does (see docs/field-notes.md, "AWS EBS direct APIs"):
// - a listing page may be empty while NextToken is set: page until it is absent;
// - every block comes with a SHA-256 checksum: verify it, a bad block is retried
//   and then reported by index, never handed on;
// - the SDK has no read timeout by default and transfers have hung: every
//   request, body included, runs under our own timeout;
// - quotas are per account and Region and shared by every worker: bounded
//   concurrency, full-jitter backoff, one retry layer (the default client is
//   built with maxAttempts 1 so SDK retries do not stack on ours);
// - a snapshot that was just created can say "does not exist" for ~2 minutes;
// - "snapshots are not related" becomes a full read that says so.

import { createHash } from 'node:crypto';
import {
  EBSClient,
  GetSnapshotBlockCommand,
  ListChangedBlocksCommand,
  ListSnapshotBlocksCommand,
  type ListSnapshotBlocksCommandOutput,
} from '@aws-sdk/client-ebs';
import type { BlockSource, ChangedBlocks } from '../../shared/ports/block-source.js';
import {
  AccessDeniedError,
  ConfigError,
  CorruptObjectError,
  NotFoundError,
  TenderError,
  TransientError,
  ValidationError,
  toError,
} from '../../shared/core/errors.js';
import { createLimiter, defaultSleep, readBody, sortUnique, withRetries, withTimeout, type RetryOptions } from './retry.js';

/** The only block size the EBS direct APIs support. */
export const EBS_BLOCK_SIZE = 512 * 1024;
/** The largest page ListSnapshotBlocks / ListChangedBlocks return (the smallest is 100). */
export const EBS_MAX_RESULTS = 10_000;
const GiB = 1024 ** 3;

let sharedClient: EBSClient | undefined;
/**
 * Module-scope client reused across calls. maxAttempts 1: our retry layer is
 * the only one. Enough sockets for the default concurrency.
 */
export function defaultEbsClient(): EBSClient {
  sharedClient ??= new EBSClient({
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 10_000, httpsAgent: { keepAlive: true, maxSockets: 128 } },
  });
  return sharedClient;
}

export type EbsRetryOptions = Partial<Omit<RetryOptions, 'isRetryable'>>;

export const DEFAULT_EBS_RETRY = { attempts: 8, baseMs: 250, maxMs: 20_000 } as const;

// ---- error classification, shared with the EBS sink -------------------------

interface AwsLikeError extends Error {
  $metadata?: { httpStatusCode?: number };
  $fault?: 'client' | 'server';
  code?: string;
  Reason?: string;
}

const THROTTLE_NAMES = new Set([
  'ThrottlingException',
  'RequestThrottledException',
  'TooManyRequestsException',
  'ConcurrentLimitExceededException',
  'SlowDown',
]);
const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'UND_ERR_SOCKET']);

function statusOf(err: AwsLikeError): number | undefined {
  return err.$metadata?.httpStatusCode;
}

/** Throttling, 5xx, timeouts and dropped connections: worth another try after a pause. */
export function isTransientAwsError(thrown: unknown): boolean {
  const err = toError(thrown) as AwsLikeError;
  if (err instanceof TenderError) return err.retryable;
  if (THROTTLE_NAMES.has(err.name)) return true;
  const status = statusOf(err);
  if (status === 429 || (status !== undefined && status >= 500)) return true;
  if (err.name === 'InternalServerException' || err.name === 'ServiceUnavailableException') return true;
  if (err.name === 'TimeoutError' || err.name === 'RequestTimeout' || err.name === 'AbortError') return true;
  if (err.code && NETWORK_CODES.has(err.code)) return true;
  return false;
}

export function isAwsNotFound(thrown: unknown): boolean {
  const err = toError(thrown) as AwsLikeError;
  return err.name === 'ResourceNotFoundException' || statusOf(err) === 404;
}

function unwrap(thrown: unknown): AwsLikeError {
  const err = toError(thrown) as AwsLikeError;
  return err instanceof TenderError && err.cause instanceof Error ? (err.cause as AwsLikeError) : err;
}

export function isUnrelatedSnapshotsError(thrown: unknown): boolean {
  const err = unwrap(thrown);
  return err.name === 'ValidationException' && (err.Reason === 'UNRELATED_SNAPSHOTS' || /not related/i.test(err.message));
}

export function isInvalidBlockTokenError(thrown: unknown): boolean {
  const err = unwrap(thrown);
  return err.name === 'ValidationException' && (err.Reason === 'INVALID_BLOCK_TOKEN' || /block token/i.test(err.message));
}

/**
 * One EBS direct request under a timeout, retried with full jitter on transient
 * errors (and on what `retryAlso` accepts); what finally fails comes back as a
 * named error. Shared by the EBS source and sink.
 */
export async function ebsRequest<T>(
  what: string,
  fn: (signal: AbortSignal) => Promise<T>,
  opts: { timeoutMs: number; retry: Omit<RetryOptions, 'isRetryable'>; retryAlso?: (e: Error) => boolean },
): Promise<T> {
  let attempts = 0;
  try {
    return await withRetries(
      () => {
        attempts++;
        return withTimeout(opts.timeoutMs, what, fn);
      },
      { ...opts.retry, isRetryable: (e) => isTransientAwsError(e) || (opts.retryAlso?.(e) ?? false) },
    );
  } catch (thrown) {
    throw normaliseEbsError(thrown, what, attempts);
  }
}

/** Turns what the SDK threw into one of Tender's named errors, keeping the original as cause. */
export function normaliseEbsError(thrown: unknown, what: string, attempts: number): Error {
  const err = toError(thrown) as AwsLikeError;
  if (err instanceof TenderError) return err;
  const status = statusOf(err);
  if (isTransientAwsError(err)) {
    return new TransientError(
      `${what} still failing after ${attempts} attempts (${err.name}: ${err.message}). EBS direct API quotas are shared by every worker in the account and Region: run fewer workers at once, lower the concurrency, or ask AWS for a higher GetSnapshotBlock quota`,
      { cause: err },
    );
  }
  if (err.name === 'AccessDeniedException' || status === 403) {
    return new AccessDeniedError(
      `${what}: access denied (${err.message}). The worker's role needs the ebs: direct API actions on this snapshot, and kms:Decrypt / kms:GenerateDataKey* on its key if it is encrypted`,
      { cause: err },
    );
  }
  if (isAwsNotFound(err)) {
    return new NotFoundError(`${what}: not found (${err.message}). Check that the snapshot exists in this Region and is completed`, { cause: err });
  }
  if (err.name === 'ValidationException' || status === 400) {
    return new ValidationError(`${what}: rejected by EBS (${err.message})`, { cause: err });
  }
  return err;
}

// ---- checksums ---------------------------------------------------------------

export function sha256Base64(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('base64');
}

// ---- the source -------------------------------------------------------------

export interface EbsSourceOptions {
  client?: EBSClient;
  snapshotId: string;
  /** Disk size; read from the snapshot's VolumeSize when omitted. */
  sizeBytes?: number;
  /** GetSnapshotBlock requests in flight at once (coldsnap uses 64). */
  concurrency?: number;
  /** Per request, body included. */
  requestTimeoutMs?: number;
  retry?: EbsRetryOptions;
  /** How long a snapshot may say "does not exist" before we believe it (eventual consistency). */
  notFoundWaitMs?: number;
  notFoundPollMs?: number;
  /**
   * Block tokens kept from listings (≈100 B each). Beyond this the source
   * looks tokens up again in windows of 10,000 blocks, so memory stays flat
   * on multi-TiB volumes.
   */
  maxCachedTokens?: number;
}

interface TokenWindow {
  /** Blocks in [start, end) that are not in `tokens` were not written in the snapshot. */
  start: number;
  end: number;
  tokens: Map<number, string>;
}

export interface EbsSource extends BlockSource {
  readonly snapshotId: string;
}

export async function openEbsSource(opts: EbsSourceOptions): Promise<EbsSource> {
  const { snapshotId } = opts;
  if (!snapshotId) throw new ConfigError('openEbsSource: snapshotId is required (an EBS snapshot id such as snap-0123…)');
  const client = opts.client ?? defaultEbsClient();
  const timeoutMs = opts.requestTimeoutMs ?? 30_000;
  const retry = { ...DEFAULT_EBS_RETRY, ...opts.retry };
  const sleep = retry.sleep ?? defaultSleep;
  const notFoundWaitMs = opts.notFoundWaitMs ?? 180_000;
  const notFoundPollMs = opts.notFoundPollMs ?? 5_000;
  const maxCachedTokens = opts.maxCachedTokens ?? 262_144;
  const limiter = createLimiter(opts.concurrency ?? 64);

  const tokens = new Map<number, string>();
  const windows: TokenWindow[] = [];
  let refilling: Promise<void> | undefined;

  const keepToken = (index: number, token: string | undefined) => {
    if (token && tokens.size < maxCachedTokens) tokens.set(index, token);
  };

  /**
   * One EBS request under a timeout, retried on transient errors with full
   * jitter, and waited on for a bounded time while the snapshot "does not exist".
   */
  async function call<T>(what: string, fn: (signal: AbortSignal) => Promise<T>, retryAlso?: (e: Error) => boolean): Promise<T> {
    let waitedMs = 0;
    for (;;) {
      try {
        return await ebsRequest(what, fn, { timeoutMs, retry, retryAlso });
      } catch (e) {
        if (e instanceof NotFoundError && waitedMs < notFoundWaitMs) {
          const pause = Math.min(notFoundPollMs, notFoundWaitMs - waitedMs);
          await sleep(pause);
          waitedMs += pause;
          continue;
        }
        throw e;
      }
    }
  }

  function listPage(nextToken: string | undefined, startingBlockIndex?: number, maxResults = EBS_MAX_RESULTS) {
    return call(`EBS ListSnapshotBlocks ${snapshotId}`, (signal) =>
      client.send(
        new ListSnapshotBlocksCommand({
          SnapshotId: snapshotId,
          MaxResults: maxResults,
          NextToken: nextToken,
          StartingBlockIndex: nextToken === undefined ? startingBlockIndex : undefined,
        }),
        { abortSignal: signal },
      ),
    );
  }

  let size = opts.sizeBytes;
  let blockSize = EBS_BLOCK_SIZE;
  if (size === undefined) {
    // The smallest page is enough to learn the volume size (and proves the snapshot is visible).
    const first: ListSnapshotBlocksCommandOutput = await listPage(undefined, undefined, 100);
    if (!first.VolumeSize) throw new NotFoundError(`EBS snapshot ${snapshotId}: the listing did not report a volume size; pass sizeBytes`);
    size = first.VolumeSize * GiB;
    if (first.BlockSize) blockSize = first.BlockSize;
    for (const b of first.Blocks ?? []) if (b.BlockIndex !== undefined) keepToken(b.BlockIndex, b.BlockToken);
  }
  const sizeBytes = size;
  const blockCount = Math.ceil(sizeBytes / blockSize);

  /** Lists the snapshot from `start` until it knows which blocks near `start` exist. */
  async function refillFrom(start: number): Promise<void> {
    const found = new Map<number, string>();
    let nextToken: string | undefined;
    let last = -1;
    do {
      const page = await listPage(nextToken, start);
      for (const b of page.Blocks ?? []) {
        if (b.BlockIndex === undefined || !b.BlockToken) continue;
        found.set(b.BlockIndex, b.BlockToken);
        last = Math.max(last, b.BlockIndex);
      }
      nextToken = page.NextToken;
    } while (nextToken && found.size === 0);
    // With more pages to come, only [start, last] is known to be complete.
    windows.push({ start, end: nextToken ? last + 1 : Number.POSITIVE_INFINITY, tokens: found });
    if (windows.length > 4) windows.shift();
  }

  /** The token for block `index`, or null when the snapshot never wrote that block. */
  async function tokenFor(index: number): Promise<string | null> {
    for (;;) {
      const cached = tokens.get(index);
      if (cached) return cached;
      const w = windows.find((x) => index >= x.start && index < x.end);
      if (w) return w.tokens.get(index) ?? null;
      if (refilling) {
        await refilling.catch(() => undefined);
        continue;
      }
      refilling = refillFrom(index).finally(() => (refilling = undefined));
      await refilling;
    }
  }

  function forgetToken(index: number) {
    tokens.delete(index);
    for (const w of windows) w.tokens.delete(index);
    // A window without this token would now claim the block is unwritten.
    for (let i = windows.length - 1; i >= 0; i--) if (index >= windows[i].start && index < windows[i].end) windows.splice(i, 1);
  }

  const expectedLength = (index: number) => Math.min(blockSize, sizeBytes - index * blockSize);

  async function fetchBlock(index: number, token: string): Promise<Uint8Array> {
    const what = `EBS GetSnapshotBlock ${snapshotId} block ${index}`;
    return call(
      what,
      async (signal) => {
        const res = await client.send(new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: index, BlockToken: token }), {
          abortSignal: signal,
        });
        const data = await readBody(res.BlockData, signal);
        const objectKey = `ebs:${snapshotId}/block/${index}`;
        if (res.DataLength !== undefined && res.DataLength !== data.byteLength) {
          throw new CorruptObjectError(objectKey, `EBS said ${res.DataLength} bytes but sent ${data.byteLength}; the read was retried and kept failing — try the backup again`);
        }
        if (!res.Checksum) {
          throw new CorruptObjectError(objectKey, 'EBS sent no checksum, so the block cannot be verified; try the backup again');
        }
        if (sha256Base64(data) !== res.Checksum) {
          throw new CorruptObjectError(
            objectKey,
            `SHA-256 checksum mismatch (EBS says ${res.Checksum}); the read was retried and kept failing — try the backup again, and if it persists report it to AWS with the snapshot id and block index`,
          );
        }
        return data;
      },
      // Bits damaged in transit come back right on a second read.
      (e) => e instanceof CorruptObjectError,
    );
  }

  const source: EbsSource = {
    snapshotId,
    size: sizeBytes,
    blockSize,

    async allocatedBlocks() {
      const blocks: number[] = [];
      let nextToken: string | undefined;
      do {
        const page = await listPage(nextToken);
        for (const b of page.Blocks ?? []) {
          if (b.BlockIndex === undefined) continue;
          blocks.push(b.BlockIndex);
          keepToken(b.BlockIndex, b.BlockToken);
        }
        // An empty page with a NextToken is normal: only an absent token ends the listing.
        nextToken = page.NextToken;
      } while (nextToken);
      return sortUnique(blocks);
    },

    async changedBlocks(parent: string): Promise<ChangedBlocks> {
      if (!parent) throw new ConfigError(`EBS snapshot ${snapshotId}: changedBlocks needs the parent snapshot id`);
      const blocks: number[] = [];
      let nextToken: string | undefined;
      try {
        do {
          const page = await call(`EBS ListChangedBlocks ${parent} → ${snapshotId}`, (signal) =>
            client.send(
              new ListChangedBlocksCommand({
                FirstSnapshotId: parent,
                SecondSnapshotId: snapshotId,
                MaxResults: EBS_MAX_RESULTS,
                NextToken: nextToken,
              }),
              { abortSignal: signal },
            ),
          );
          for (const b of page.ChangedBlocks ?? []) {
            if (b.BlockIndex === undefined) continue;
            blocks.push(b.BlockIndex);
            // No SecondBlockToken: the block is absent from this snapshot. readBlock
            // then looks it up and, if it really is unwritten, returns zeros.
            keepToken(b.BlockIndex, b.SecondBlockToken);
          }
          nextToken = page.NextToken;
        } while (nextToken);
      } catch (thrown) {
        if (!isUnrelatedSnapshotsError(thrown)) throw thrown;
        return {
          blocks: await source.allocatedBlocks(),
          incremental: false,
          reason: `EBS: snapshots ${parent} and ${snapshotId} are not related — full read`,
        };
      }
      return { blocks: sortUnique(blocks), incremental: true };
    },

    async readBlock(index: number) {
      if (!Number.isInteger(index) || index < 0 || index >= blockCount) {
        throw new RangeError(`EBS snapshot ${snapshotId}: block ${index} is outside the disk (0…${blockCount - 1})`);
      }
      return limiter.run(async () => {
        for (let tokenTries = 0; ; tokenTries++) {
          const token = await tokenFor(index);
          if (token === null) return new Uint8Array(expectedLength(index));
          try {
            const data = await fetchBlock(index, token);
            // Each block is read once per backup: dropping its token keeps memory flat.
            tokens.delete(index);
            return data.byteLength > expectedLength(index) ? data.subarray(0, expectedLength(index)) : data;
          } catch (thrown) {
            // Tokens live 7 days; a stale one is looked up again, once.
            if (tokenTries === 0 && isInvalidBlockTokenError(thrown)) {
              forgetToken(index);
              continue;
            }
            throw thrown;
          }
        }
      });
    },

    async close() {
      tokens.clear();
      windows.length = 0;
    },
  };
  return source;
}

