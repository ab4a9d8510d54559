// BlockSource over an Azure managed-disk snapshot (or any page blob) read
// through a SAS URL: page ranges say which blocks hold data, ranged GETs read
// them, and the page-range diff against the parent snapshot gives the changed
// blocks of an incremental backup.
//
// Page-range conventions (pinned by tests, see field notes):
// - the REST API's PageList gives <Start> and <End> with End INCLUSIVE
//   (one 512-byte page at 0 is Start 0, End 511);
// - @azure/storage-blob's getPageRanges / getPageRangesDiff* turn that into
//   { offset: Start, count: End - Start }: `count` is one byte short;
// - listPageRanges() yields the raw { start, end, isClear }.
// Everything below converts to the REST form ({ start, end } inclusive) first.

import { AnonymousCredential, PageBlobClient, newPipeline } from '@azure/storage-blob';
import type { BlockSource, ChangedBlocks } from '../../shared/ports/block-source.js';
import { AccessDeniedError, ConfigError, NotFoundError, TenderError, TransientError, toError } from '../../shared/core/errors.js';
import { createLimiter, readBody, sortUnique, withRetries, withTimeout, type RetryOptions } from './retry.js';

export const AZURE_PAGE_SIZE = 512;
export const DEFAULT_AZURE_BLOCK_SIZE = 512 * 1024;

/** A page range as the REST API's PageList has it: both ends inclusive, in bytes. */
export interface PageRange {
  start: number;
  end: number;
}

/** From the SDK's { offset, count } (count = End - Start) back to the REST range. */
export function pageRangeFromSdk(r: { offset: number; count?: number }): PageRange {
  const count = r.count ?? 0;
  // Pages are 512-byte aligned, so a real byte count is a multiple of 512. A
  // count of 512·k − 1 is the SDK's End − Start; a multiple of 512 would mean a
  // future SDK fixed it. Both map to the same range.
  const bytes = count % AZURE_PAGE_SIZE === AZURE_PAGE_SIZE - 1 ? count + 1 : count;
  return { start: r.offset, end: r.offset + bytes - 1 };
}

/** Indices of the blocks that the ranges touch, ascending, each once. */
export function blocksOfPageRanges(ranges: Iterable<PageRange>, blockSize: number): number[] {
  const out: number[] = [];
  for (const r of ranges) {
    if (r.end < r.start) continue;
    const first = Math.floor(r.start / blockSize);
    const last = Math.floor(r.end / blockSize);
    for (let b = first; b <= last; b++) out.push(b);
  }
  return sortUnique(out);
}

export interface PageRangeDiff {
  /** Pages written since the parent. */
  pageRange: PageRange[];
  /** Pages cleared since the parent: they read as zeros. */
  clearRange: PageRange[];
}

export interface ChangedBlockMap {
  /** Every block touched by a written or a cleared range, ascending. */
  blocks: number[];
  /** The subset made only of cleared pages: zeros, no need to read them. */
  clearedBlocks: number[];
}

/** Maps a page-range diff onto blocks of `blockSize` of a disk of `sizeBytes`. */
export function mapPageRangeDiff(diff: PageRangeDiff, blockSize: number, sizeBytes: number): ChangedBlockMap {
  const written = blocksOfPageRanges(diff.pageRange, blockSize);
  const writtenSet = new Set(written);
  const touchedByClear = blocksOfPageRanges(diff.clearRange, blockSize);
  const blocks = sortUnique([...written, ...touchedByClear]);

  // A block is cleared only if clear ranges cover all of it (up to the end of
  // the disk) and nothing in it was written; adjacent clear ranges are merged first.
  const merged: PageRange[] = [];
  for (const r of [...diff.clearRange].sort((a, b) => a.start - b.start)) {
    const prev = merged[merged.length - 1];
    if (prev && r.start <= prev.end + 1) prev.end = Math.max(prev.end, r.end);
    else merged.push({ ...r });
  }
  const clearedBlocks: number[] = [];
  for (const r of merged) {
    for (let b = Math.ceil(r.start / blockSize); b * blockSize < sizeBytes; b++) {
      const blockEnd = Math.min((b + 1) * blockSize, sizeBytes) - 1;
      if (blockEnd > r.end) break;
      if (!writtenSet.has(b)) clearedBlocks.push(b);
    }
  }
  return { blocks, clearedBlocks: sortUnique(clearedBlocks) };
}

// ---- errors -----------------------------------------------------------------

interface RestLikeError extends Error {
  statusCode?: number;
  code?: string;
}

const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'REQUEST_SEND_ERROR', 'UND_ERR_SOCKET']);

export function isTransientAzureError(thrown: unknown): boolean {
  const err = toError(thrown) as RestLikeError;
  if (err instanceof TenderError) return err.retryable;
  const s = err.statusCode;
  if (s === 408 || s === 429 || (s !== undefined && s >= 500)) return true;
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return true;
  return err.code !== undefined && NETWORK_CODES.has(err.code);
}

/** Never puts the SAS in a message: it is a bearer secret. */
export function redactSas(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const params = new URLSearchParams(url.slice(q + 1));
  const snapshot = params.get('snapshot');
  return url.slice(0, q) + (snapshot ? `?snapshot=${snapshot}` : '');
}

export function normaliseAzureError(thrown: unknown, what: string, attempts: number): Error {
  const err = toError(thrown) as RestLikeError;
  if (err instanceof TenderError) return err;
  const detail = err.code ? `${err.code}` : err.message.split('\n')[0];
  if (isTransientAzureError(err)) {
    return new TransientError(
      `${what} still failing after ${attempts} attempts (${detail}). A page blob serves about 60 MiB/s and 500 requests/s: lower the concurrency or run fewer workers against one snapshot`,
      { cause: err },
    );
  }
  if (err.statusCode === 403) {
    return new AccessDeniedError(
      `${what}: access denied (${detail}). The SAS has expired, was revoked, or lacks the needed permission: grant access again with a longer duration`,
      { cause: err },
    );
  }
  if (err.statusCode === 404) {
    return new NotFoundError(`${what}: not found (${detail}). Check that the snapshot (or disk) still exists and that the SAS URL points to it`, {
      cause: err,
    });
  }
  return err;
}

// ---- plumbing shared with the Azure disk sink ---------------------------------

export type AzureRetryOptions = Partial<Omit<RetryOptions, 'isRetryable'>>;
export const DEFAULT_AZURE_RETRY = { attempts: 8, baseMs: 250, maxMs: 20_000 } as const;

/** A client for a SAS URL with the SDK's own retries off: ours are the only layer. */
export function pageBlobClientForSas(sasUrl: string): PageBlobClient {
  return new PageBlobClient(sasUrl, newPipeline(new AnonymousCredential(), { retryOptions: { maxTries: 1 } }));
}

export function azureCaller(opts: { requestTimeoutMs?: number; retry?: AzureRetryOptions }) {
  const timeoutMs = opts.requestTimeoutMs ?? 60_000;
  const retry = { ...DEFAULT_AZURE_RETRY, ...opts.retry };
  return async function call<T>(what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    let attempts = 0;
    try {
      return await withRetries(
        () => {
          attempts++;
          return withTimeout(timeoutMs, what, fn);
        },
        { ...retry, isRetryable: isTransientAzureError },
      );
    } catch (thrown) {
      throw normaliseAzureError(thrown, what, attempts);
    }
  };
}

// ---- the source -------------------------------------------------------------

export interface AzureSnapshotSourceOptions {
  /** Read SAS of the snapshot (a managed-disk export URL, or a page blob / blob snapshot URL). */
  sasUrl: string;
  /** Read SAS of the parent snapshot, used by changedBlocks when its argument is not a URL. */
  parentSasUrl?: string;
  /** Multiple of 512; default 512 KiB. */
  blockSize?: number;
  /** Ranged GETs in flight at once. */
  concurrency?: number;
  requestTimeoutMs?: number;
  retry?: AzureRetryOptions;
  /** Bytes of the disk per diff request; a truncated answer is split further. */
  diffWindowBytes?: number;
  pageBlobClient?: PageBlobClient;
}

export async function openAzureSnapshotSource(opts: AzureSnapshotSourceOptions): Promise<BlockSource> {
  const blockSize = opts.blockSize ?? DEFAULT_AZURE_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize <= 0 || blockSize % AZURE_PAGE_SIZE !== 0) {
    throw new ConfigError(`Azure snapshot source: blockSize must be a positive multiple of 512 bytes (got ${blockSize})`);
  }
  if (!opts.sasUrl && !opts.pageBlobClient) throw new ConfigError('Azure snapshot source: sasUrl is required (a read SAS of the snapshot)');
  const client = opts.pageBlobClient ?? pageBlobClientForSas(opts.sasUrl);
  const name = redactSas(opts.sasUrl || client.url);
  const call = azureCaller(opts);
  const limiter = createLimiter(opts.concurrency ?? 16);
  const diffWindow = Math.max(blockSize, Math.floor((opts.diffWindowBytes ?? 8 * 1024 ** 3) / blockSize) * blockSize);

  const props = await call(`Azure get properties of ${name}`, (abortSignal) => client.getProperties({ abortSignal }));
  const size = props.contentLength ?? 0;
  const blockCount = Math.ceil(size / blockSize);
  /** Blocks known to be zeros without a read (cleared since the parent). */
  let zeroBlocks = new Set<number>();

  /** Changed and cleared ranges in [offset, offset+count), split while the service truncates its answer. */
  async function diffRanges(parentUrl: string, offset: number, count: number, out: PageRangeDiff): Promise<void> {
    const what = `Azure page-range diff of ${name} against ${redactSas(parentUrl)} at ${offset}+${count}`;
    const res = await call(what, (abortSignal) => {
      const sameBlobSnapshot = sameBlobSnapshotTime(client.url, parentUrl);
      // A snapshot of this very blob is named by its timestamp; a managed-disk
      // snapshot is another blob, named by its URL (x-ms-previous-snapshot-url).
      return sameBlobSnapshot
        ? client.getPageRangesDiff(offset, count, sameBlobSnapshot, { abortSignal })
        : client.getPageRangesDiffForManagedDisks(offset, count, parentUrl, { abortSignal });
    });
    const truncated = (res as { continuationToken?: string }).continuationToken;
    if (truncated) {
      // The SDK's diff calls cannot pass a marker: ask for half the bytes instead.
      if (count <= blockSize) throw new TransientError(`${what}: the service truncated the answer even for one block; try again later`);
      const half = Math.ceil(count / 2 / blockSize) * blockSize;
      await diffRanges(parentUrl, offset, half, out);
      await diffRanges(parentUrl, offset + half, count - half, out);
      return;
    }
    for (const r of res.pageRange ?? []) out.pageRange.push(pageRangeFromSdk(r));
    for (const r of res.clearRange ?? []) out.clearRange.push(pageRangeFromSdk(r));
  }

  return {
    size,
    blockSize,

    async allocatedBlocks() {
      const ranges: PageRange[] = [];
      const what = `Azure list page ranges of ${name}`;
      let marker: string | undefined;
      // Paged with a marker: one answer for a fragmented multi-TiB disk can time out.
      do {
        const page = await call(what, async (abortSignal) => {
          const iter = client.listPageRanges(0, undefined, { abortSignal }).byPage({ continuationToken: marker, maxPageSize: 10_000 });
          const r = await iter.next();
          return r.done ? undefined : r.value;
        });
        for (const r of page?.pageRange ?? []) ranges.push({ start: r.start, end: r.end });
        marker = page?.continuationToken || undefined;
      } while (marker);
      return blocksOfPageRanges(ranges, blockSize).filter((b) => b < blockCount);
    },

    async changedBlocks(parent: string): Promise<ChangedBlocks> {
      const parentUrl = /^https?:\/\//i.test(parent) ? parent : opts.parentSasUrl;
      if (!parentUrl) {
        throw new ConfigError(
          `Azure snapshot source ${name}: no SAS URL for the parent snapshot ${parent || '(none)'}; grant read access to it and pass parentSasUrl`,
        );
      }
      const diff: PageRangeDiff = { pageRange: [], clearRange: [] };
      for (let offset = 0; offset < size; offset += diffWindow) {
        await diffRanges(parentUrl, offset, Math.min(diffWindow, size - offset), diff);
      }
      const mapped = mapPageRangeDiff(diff, blockSize, size);
      zeroBlocks = new Set(mapped.clearedBlocks);
      return { blocks: mapped.blocks.filter((b) => b < blockCount), incremental: true };
    },

    async readBlock(index: number) {
      if (!Number.isInteger(index) || index < 0 || index >= blockCount) {
        throw new RangeError(`Azure snapshot ${name}: block ${index} is outside the disk (0…${blockCount - 1})`);
      }
      const offset = index * blockSize;
      const count = Math.min(blockSize, size - offset);
      if (zeroBlocks.has(index)) return new Uint8Array(count);
      return limiter.run(() =>
        call(`Azure read ${name} block ${index}`, async (abortSignal) => {
          // maxRetryRequests 0: the SDK would otherwise re-fetch a broken body on its own.
          const res = await client.download(offset, count, { abortSignal, maxRetryRequests: 0 });
          const data = await readBody(res.readableStreamBody, abortSignal);
          if (data.byteLength !== count) {
            throw new TransientError(`Azure read ${name} block ${index}: got ${data.byteLength} of ${count} bytes`);
          }
          return data;
        }),
      );
    },

    async close() {
      zeroBlocks.clear();
    },
  };
}

/** The snapshot timestamp when `parentUrl` is a snapshot of the same blob as `url`. */
function sameBlobSnapshotTime(url: string, parentUrl: string): string | undefined {
  try {
    const a = new URL(url);
    const b = new URL(parentUrl);
    const snapshot = b.searchParams.get('snapshot');
    return snapshot && a.origin === b.origin && a.pathname === b.pathname ? snapshot : undefined;
  } catch {
    return undefined;
  }
}

