// BlockSink that restores into an Azure managed disk through its write SAS
// (a disk created for upload, in the ReadyToUpload state, then granted
// `Write` access), or into any page blob.
//
// The target must read as zeros before the restore, as a newly created upload
// disk does: all-zero blocks are skipped, which keeps a sparse disk sparse and
// saves both time and requests. Contiguous blocks are coalesced into Put Page
// requests of up to 4 MiB (the service's maximum), aligned to 512-byte pages.
//
// abort(): stops writing and waits for the uploads in flight. It cannot delete
// the disk — the SAS only grants writes to it: the caller that created the disk
// must revoke access (endGetAccess) and delete it.

import type { PageBlobClient } from '@azure/storage-blob';
import type { BlockSink } from '../../shared/ports/block-source.js';
import { ConfigError } from '../../shared/core/errors.js';
import {
  AZURE_PAGE_SIZE,
  DEFAULT_AZURE_BLOCK_SIZE,
  azureCaller,
  pageBlobClientForSas,
  redactSas,
  type AzureRetryOptions,
} from '../sources/azure-snapshot.js';
import { createLimiter, createWriteBehind, isAllZero } from '../sources/retry.js';

/** The largest Put Page request. */
export const AZURE_MAX_PUT_PAGE_BYTES = 4 * 1024 * 1024;

export interface AzureDiskSinkOptions {
  /** Write SAS of the upload disk (or page blob). */
  sasUrl: string;
  pageBlobClient?: PageBlobClient;
  /** Multiple of 512; default 512 KiB. */
  blockSize?: number;
  /** Put Page requests in flight at once. */
  concurrency?: number;
  requestTimeoutMs?: number;
  retry?: AzureRetryOptions;
}

export interface AzureDiskSink extends BlockSink {
  /** Disk size in bytes, as the service reports it. */
  readonly size: number;
}

export async function createAzureDiskSink(opts: AzureDiskSinkOptions): Promise<AzureDiskSink> {
  const blockSize = opts.blockSize ?? DEFAULT_AZURE_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize <= 0 || blockSize % AZURE_PAGE_SIZE !== 0) {
    throw new ConfigError(`Azure disk sink: blockSize must be a positive multiple of 512 bytes (got ${blockSize})`);
  }
  if (!opts.sasUrl && !opts.pageBlobClient) throw new ConfigError('Azure disk sink: sasUrl is required (a write SAS of the upload disk)');
  const client = opts.pageBlobClient ?? pageBlobClientForSas(opts.sasUrl);
  const name = redactSas(opts.sasUrl || client.url);
  const call = azureCaller(opts);
  const writes = createWriteBehind(opts.concurrency ?? 8);

  const props = await call(`Azure get properties of ${name}`, (abortSignal) => client.getProperties({ abortSignal }));
  const size = props.contentLength ?? 0;
  const blockCount = Math.ceil(size / blockSize);
  let state: 'open' | 'finished' | 'aborted' = 'open';

  /** Bytes waiting to go out as one Put Page: contiguous, starting at `offset`. */
  let run: { offset: number; buf: Uint8Array; length: number } | undefined;

  function upload(offset: number, buf: Uint8Array, length: number) {
    return writes.submit(() =>
      call(`Azure put pages ${name} at ${offset}+${length}`, async (abortSignal) => {
        await client.uploadPages(Buffer.from(buf.buffer, buf.byteOffset, length), offset, length, { abortSignal });
      }),
    );
  }

  async function flush() {
    if (!run || run.length === 0) return;
    const { offset, buf, length } = run;
    run = undefined;
    await upload(offset, buf, length);
  }

  const assertOpen = (op: string) => {
    if (state !== 'open') throw new ConfigError(`Azure disk sink ${name}: ${op} after ${state === 'finished' ? 'finish' : 'abort'}; create a new sink`);
  };

  // Restore calls writeBlock for many blocks at once. The run being assembled is shared state
  // across awaits (a flush in one call must not let another call start a run this call then
  // appends to), so calls go through one at a time, in call order.
  const one = createLimiter(1);
  const serial = <T>(fn: () => Promise<T>): Promise<T> => one.run(fn);

  return {
    blockSize,
    size,

    writeBlock: (index: number, data: Uint8Array) => serial(() => writeOne(index, data)),

    async finish() {
      assertOpen('finish');
      await serial(() => flush());
      await writes.drain();
      state = 'finished';
      return redactSas(opts.sasUrl || client.url);
    },

    async abort() {
      if (state !== 'open') return;
      state = 'aborted';
      await serial(async () => undefined);
      run = undefined;
      await writes.settle();
    },
  };

  async function writeOne(index: number, data: Uint8Array): Promise<void> {
    assertOpen('writeBlock');
    if (!Number.isInteger(index) || index < 0 || index >= blockCount) {
      throw new RangeError(`Azure disk sink ${name}: block ${index} is outside the ${size}-byte disk`);
    }
    const offset = index * blockSize;
    const room = Math.min(blockSize, size - offset);
    if (data.byteLength > room) {
      throw new RangeError(`Azure disk sink ${name}: block ${index} has ${data.byteLength} bytes, but only ${room} fit at its offset`);
    }
    if (isAllZero(data)) return;
    // Pages are whole: a short tail is padded with zeros up to the next 512 bytes.
    const padded = Math.ceil(data.byteLength / AZURE_PAGE_SIZE) * AZURE_PAGE_SIZE;

    if (run && (run.offset + run.length !== offset || run.length + padded > AZURE_MAX_PUT_PAGE_BYTES)) await flush();
    let written = 0;
    while (written < padded) {
      // The caller may reuse its buffer once we return: copy into our own.
      run ??= { offset: offset + written, buf: new Uint8Array(AZURE_MAX_PUT_PAGE_BYTES), length: 0 };
      const take = Math.min(padded - written, AZURE_MAX_PUT_PAGE_BYTES - run.length);
      run.buf.set(data.subarray(written, Math.min(written + take, data.byteLength)), run.length);
      run.length += take;
      written += take;
      if (run.length === AZURE_MAX_PUT_PAGE_BYTES) await flush();
    }
  }
}
