// ObjectStore on an Azure Blob Storage container (or Azurite), under a name
// prefix. Objects are block blobs. A large put stages blocks and commits the
// list at the end; the blob changes only at the commit, so readers never see a
// partial object. Conditional creates carry `If-None-Match: *` all the way to
// the commit, which Azure evaluates atomically.
import { checkKey, checkRange, normalisePrefix } from '../core/store-keys.js';
import { isIP } from 'node:net';
import type { ContainerClient } from '@azure/storage-blob';
import type { GetRange, ObjectInfo, ObjectStore } from '../ports/object-store.js';
import { AccessDeniedError, ConfigError, NotFoundError, TransientError } from '../core/errors.js';

/** Above this size a put stages blocks instead of one Put Blob. */
export const BLOB_SINGLE_SHOT_MAX = 16 * 1024 * 1024;
const BLOCK_SIZE = 8 * 1024 * 1024;
const BLOCK_CONCURRENCY = 4;

export interface BlobStoreOptions {
  containerClient: ContainerClient;
  /** Name prefix of the repository inside the container ("" or e.g. "tender/prod"). */
  prefix?: string;
  /** Page size of listings (Azure's default and maximum is 5000); tests lower it to exercise paging. */
  listPageSize?: number;
}

export function createBlobStore(opts: BlobStoreOptions): ObjectStore {
  const container = opts.containerClient;
  if (!container) throw new ConfigError('createBlobStore: a containerClient is required');
  const prefix = normalisePrefix(opts.prefix ?? '');
  const account = container.accountName || accountFromUrl(container.url);
  const location = `azblob://${account}/${container.containerName}/${prefix}`;
  const blob = (key: string) => container.getBlockBlobClient(prefix + checkKey(key, location));
  const mapErr = (err: unknown, op: Op, key: string) =>
    mapBlobError(err, { op, key, location, container: `${account}/${container.containerName}` });

  async function stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const p = await blob(key).getProperties();
      return { key, size: p.contentLength ?? 0, modified: p.lastModified ?? new Date(0) };
    } catch (err) {
      if (isBlobMissing(err)) return undefined;
      throw mapErr(err, 'stat', key);
    }
  }

  async function upload(key: string, data: Uint8Array, ifAbsent: boolean): Promise<void> {
    await blob(key).uploadData(data, {
      blockSize: BLOCK_SIZE,
      concurrency: BLOCK_CONCURRENCY,
      maxSingleShotSize: BLOB_SINGLE_SHOT_MAX,
      ...(ifAbsent ? { conditions: { ifNoneMatch: '*' } } : {}),
    });
  }

  return {
    location,

    async put(key, data) {
      try {
        await upload(key, data, false);
      } catch (err) {
        throw mapErr(err, 'put', key);
      }
    },

    async putIfAbsent(key, data) {
      try {
        await upload(key, data, true);
        return true;
      } catch (err) {
        // 409 BlobAlreadyExists (Put Blob) or 412 ConditionNotMet (Put Block List).
        const status = statusOf(err);
        const code = codeOf(err);
        if (status === 409 && code !== 'ContainerNotFound') return false;
        if (status === 412 || code === 'BlobAlreadyExists' || code === 'ConditionNotMet') return false;
        throw mapErr(err, 'putIfAbsent', key);
      }
    },

    async get(key, range?: GetRange) {
      checkRange(range, location, key);
      if (range && range.length === 0) {
        // Azure reads a zero count as "to the end"; an empty range only proves the key exists.
        if (!(await stat(key))) throw mapErr(missing(), 'get', key);
        return new Uint8Array(0);
      }
      try {
        const res = await blob(key).download(range?.offset ?? 0, range?.length);
        const body = res.readableStreamBody;
        const chunks: Buffer[] = [];
        let n = 0;
        if (body) {
          for await (const c of body) {
            const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
            chunks.push(b);
            n += b.byteLength;
          }
        }
        if (res.contentLength !== undefined && n !== res.contentLength) {
          throw new TransientError(
            `${location}: read of "${key}" ended after ${n} of ${res.contentLength} bytes (connection dropped); retry`,
          );
        }
        const out = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n);
        return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      } catch (err) {
        // 416: the range starts at or past the end of an existing blob.
        if (statusOf(err) === 416 || codeOf(err) === 'InvalidRange') return new Uint8Array(0);
        throw mapErr(err, 'get', key);
      }
    },

    stat,

    list(listPrefix: string): AsyncIterable<ObjectInfo> {
      const fullPrefix = prefix + listPrefix;
      return (async function* () {
        // Metadata reveals the folder placeholders of accounts with a hierarchical
        // namespace (ADLS Gen2), which the Blob API lists like blobs.
        const pages = container
          .listBlobsFlat({ prefix: fullPrefix, includeMetadata: true })
          .byPage({ maxPageSize: opts.listPageSize ?? 5000 });
        for (;;) {
          let next;
          try {
            next = await pages.next();
          } catch (err) {
            throw mapErr(err, 'list', listPrefix);
          }
          if (next.done) return;
          for (const item of next.value.segment.blobItems) {
            if (!item.name.startsWith(prefix) || item.metadata?.hdi_isfolder === 'true') continue;
            yield {
              key: item.name.slice(prefix.length),
              size: item.properties.contentLength ?? 0,
              modified: item.properties.lastModified,
            };
          }
        }
      })();
    },

    async delete(key) {
      try {
        // Snapshots of a blob block its deletion; the object goes as a whole.
        await blob(key).deleteIfExists({ deleteSnapshots: 'include' });
      } catch (err) {
        if (isBlobMissing(err)) return;
        throw mapErr(err, 'delete', key);
      }
    },
  };
}

type Op = 'put' | 'putIfAbsent' | 'get' | 'stat' | 'list' | 'delete';

const PERMISSION: Record<Op, string> = {
  put: 'blobs/write (role "Storage Blob Data Contributor")',
  putIfAbsent: 'blobs/write (role "Storage Blob Data Contributor")',
  get: 'blobs/read (role "Storage Blob Data Reader" or Contributor)',
  stat: 'blobs/read (role "Storage Blob Data Reader" or Contributor)',
  list: 'blobs/read to list the container (role "Storage Blob Data Reader" or Contributor)',
  delete: 'blobs/delete (role "Storage Blob Data Contributor")',
};

function statusOf(err: unknown): number | undefined {
  return (err as { statusCode?: number })?.statusCode;
}
function codeOf(err: unknown): string | undefined {
  const e = err as { code?: string; details?: { errorCode?: string }; response?: { headers?: { get?(n: string): string | undefined } } };
  return e?.details?.errorCode ?? e?.code ?? e?.response?.headers?.get?.('x-ms-error-code');
}
function isBlobMissing(err: unknown): boolean {
  const code = codeOf(err);
  if (code === 'ContainerNotFound') return false;
  return statusOf(err) === 404 || code === 'BlobNotFound';
}
function missing(): Error {
  return Object.assign(new Error('BlobNotFound'), { statusCode: 404, code: 'BlobNotFound' });
}

const TRANSIENT_CODES = new Set([
  'ServerBusy',
  'OperationTimedOut',
  'InternalError',
  'TooManyRequests',
  'REQUEST_SEND_ERROR',
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

/** Turns what the Azure SDK threw into one of Tender's named errors; messages name the place and the fix. */
export function mapBlobError(err: unknown, ctx: { op: Op; key: string; location: string; container: string }): Error {
  if (err instanceof Error && 'retryable' in err) return err; // already ours
  const status = statusOf(err);
  const code = codeOf(err);
  const what = `${ctx.location} ${ctx.op} "${ctx.key}"`;
  const msg = (err as Error)?.message?.split('\n')[0] ?? String(err);
  if (code === 'ContainerNotFound') {
    return new ConfigError(`${what}: container "${ctx.container}" does not exist; create it or fix the repository URL`, { cause: err });
  }
  if (isBlobMissing(err)) return new NotFoundError(`${what}: no such object`, { cause: err });
  if (status === 403 || code === 'AuthorizationPermissionMismatch' || code === 'AuthorizationFailure') {
    return new AccessDeniedError(
      `${what}: access denied to container "${ctx.container}" (${code ?? status}); the worker's identity or SAS needs ` +
        `Microsoft.Storage/storageAccounts/blobServices/containers/${PERMISSION[ctx.op]} on it, and the storage ` +
        `firewall must admit the worker's network`,
      { cause: err },
    );
  }
  if (
    status === 429 ||
    (status !== undefined && status >= 500) ||
    TRANSIENT_CODES.has(code ?? '') ||
    (err as Error)?.name === 'TimeoutError'
  ) {
    return new TransientError(`${what}: Azure Blob failed transiently (${status ?? 'no response'} ${code ?? msg}); retry`, {
      cause: err,
    });
  }
  return new Error(`${what} failed (${status ?? 'no response'} ${code ?? ''} ${msg})`, { cause: err });
}

function accountFromUrl(url: string): string {
  try {
    const u = new URL(url);
    // Azurite and other path-style endpoints put the account first in the path.
    if (!u.hostname.includes('.') || isIP(u.hostname) !== 0) return u.pathname.split('/')[1] ?? u.hostname;
    return u.hostname.split('.')[0]!;
  } catch {
    return 'unknown-account';
  }
}

