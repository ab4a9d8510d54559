// ObjectStore on an S3 bucket (or any S3-compatible server), under a key prefix.
// Objects larger than 16 MiB go up as multipart uploads; S3 makes an object
// visible only when its upload completes, so readers never see a partial one.
// A killed worker can leave incomplete multipart uploads behind (billed, never
// visible): the bucket should carry an AbortIncompleteMultipartUpload lifecycle rule.
import { checkKey, checkRange, normalisePrefix } from '../core/store-keys.js';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { GetRange, ObjectInfo, ObjectStore } from '../ports/object-store.js';
import { AccessDeniedError, ConfigError, NotFoundError, TransientError } from '../core/errors.js';

/** Above this size a put becomes a multipart upload. */
export const S3_MULTIPART_THRESHOLD = 16 * 1024 * 1024;
const PART_SIZE = 8 * 1024 * 1024;
const PART_CONCURRENCY = 4;

export interface S3StoreOptions {
  client?: S3Client;
  bucket: string;
  /** Key prefix of the repository inside the bucket ("" or e.g. "tender/prod"). */
  prefix?: string;
  /** Page size of listings (S3's maximum and default is 1000); tests lower it to exercise paging. */
  listPageSize?: number;
  /**
   * ONLY for S3-compatible test servers that ignore `If-None-Match: *` on PUT
   * (s3rver 3.x does: it silently overwrites). With this set, putIfAbsent does
   * HeadObject, then PutObject: NOT atomic, two writers can both "win". Never set
   * it against AWS S3, which honours the condition natively; the default (false)
   * always sends the condition and trusts the server's 412.
   */
  unsafeEmulateConditionalPut?: boolean;
}

let defaultClient: S3Client | undefined;

export function createS3Store(opts: S3StoreOptions): ObjectStore {
  const { bucket } = opts;
  if (!bucket) throw new ConfigError('createS3Store: a bucket name is required');
  const client = opts.client ?? (defaultClient ??= new S3Client({}));
  const prefix = normalisePrefix(opts.prefix ?? '');
  const location = `s3://${bucket}/${prefix}`;
  const full = (key: string) => prefix + checkKey(key, location);
  const resource = (key?: string) => `arn:aws:s3:::${bucket}/${prefix}${key ?? '*'}`;

  const mapErr = (err: unknown, op: Op, key: string) => mapS3Error(err, { op, key, location, bucket, resource: resource(key) });

  async function putPlain(key: string, data: Uint8Array, ifNoneMatch: boolean): Promise<void> {
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: full(key),
        Body: data,
        ContentLength: data.byteLength,
        ...(ifNoneMatch ? { IfNoneMatch: '*' } : {}),
      }),
    );
  }

  async function stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const res = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: full(key) }));
      return { key, size: res.ContentLength ?? 0, modified: res.LastModified ?? new Date(0) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw mapErr(err, 'stat', key);
    }
  }

  return {
    location,

    async put(key, data) {
      try {
        if (data.byteLength <= S3_MULTIPART_THRESHOLD) return await putPlain(key, data, false);
        const upload = new Upload({
          client,
          params: { Bucket: bucket, Key: full(key), Body: data },
          partSize: PART_SIZE,
          queueSize: PART_CONCURRENCY,
          // Abort on failure so no orphaned parts pile up (a killed process still can).
          leavePartsOnError: false,
        });
        await upload.done();
      } catch (err) {
        throw mapErr(err, 'put', key);
      }
    },

    async putIfAbsent(key, data) {
      // Always a single PUT (up to 5 GiB): lib-storage cannot carry the condition
      // to CompleteMultipartUpload, and conditional objects (locks, write-once
      // records) are small.
      try {
        if (opts.unsafeEmulateConditionalPut) {
          if (await stat(key)) return false;
          await putPlain(key, data, false);
          return true;
        }
        await putPlain(key, data, true);
        return true;
      } catch (err) {
        // 412: an object exists. 409 ConditionalRequestConflict: another write to
        // the key was in flight; treat as taken, the caller backs off like any loser.
        const status = statusOf(err);
        const name = nameOf(err);
        if (status === 412 || name === 'PreconditionFailed' || status === 409 || name === 'ConditionalRequestConflict') {
          return false;
        }
        throw mapErr(err, 'putIfAbsent', key);
      }
    },

    async get(key, range?: GetRange) {
      checkRange(range, location, key);
      if (range && range.length === 0) {
        // An empty range cannot be expressed as an HTTP Range; just prove the key exists.
        if (!(await stat(key))) throw mapErr(notFound(), 'get', key);
        return new Uint8Array(0);
      }
      try {
        const res = await client.send(
          new GetObjectCommand({
            Bucket: bucket,
            Key: full(key),
            ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
          }),
        );
        let bytes = res.Body ? await res.Body.transformToByteArray() : new Uint8Array(0);
        // A dropped connection can end the body early without an error.
        if (res.ContentLength !== undefined && bytes.byteLength !== res.ContentLength) {
          throw new TransientError(
            `${location}: read of "${key}" ended after ${bytes.byteLength} of ${res.ContentLength} bytes (connection dropped); retry`,
          );
        }
        if (range) bytes = exactRange(bytes, res.ContentRange, range, `${location} get "${key}"`);
        return bytes;
      } catch (err) {
        // 416: the range starts at or past the end of an existing object.
        if (statusOf(err) === 416 || nameOf(err) === 'InvalidRange') return new Uint8Array(0);
        throw mapErr(err, 'get', key);
      }
    },

    stat,

    list(listPrefix: string): AsyncIterable<ObjectInfo> {
      const fullPrefix = prefix + listPrefix;
      return (async function* () {
        let token: string | undefined;
        do {
          let page;
          try {
            page = await client.send(
              new ListObjectsV2Command({
                Bucket: bucket,
                Prefix: fullPrefix,
                ContinuationToken: token,
                MaxKeys: opts.listPageSize,
              }),
            );
          } catch (err) {
            throw mapErr(err, 'list', listPrefix);
          }
          for (const obj of page.Contents ?? []) {
            if (!obj.Key || !obj.Key.startsWith(prefix)) continue;
            yield { key: obj.Key.slice(prefix.length), size: obj.Size ?? 0, modified: obj.LastModified ?? new Date(0) };
          }
          token = page.IsTruncated ? page.NextContinuationToken : undefined;
        } while (token);
      })();
    },

    async delete(key) {
      try {
        // S3 answers 204 for a missing key too.
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: full(key) }));
      } catch (err) {
        if (isNotFound(err) && nameOf(err) !== 'NoSuchBucket') return;
        throw mapErr(err, 'delete', key);
      }
    },
  };
}

/**
 * Some S3-compatible servers ignore Range (200 with the whole object) or answer
 * a wider range than asked (s3rver for "bytes=0-0"). Hand back exactly the bytes
 * asked for, or fail: wrong bytes must never reach a caller.
 */
function exactRange(bytes: Uint8Array, contentRange: string | undefined, range: GetRange, what: string): Uint8Array {
  let out = bytes;
  const m = contentRange ? /^bytes (\d+)-(\d+)\/(?:\d+|\*)$/.exec(contentRange) : null;
  if (m) {
    if (Number(m[1]) !== range.offset) {
      throw new Error(`${what}: the server answered ${contentRange} for bytes ${range.offset}-${range.offset + range.length - 1}; it mishandles ranged reads`);
    }
  } else {
    out = out.subarray(Math.min(range.offset, out.byteLength)); // the whole object came back
  }
  return out.byteLength > range.length ? out.subarray(0, range.length) : out;
}

type Op = 'put' | 'putIfAbsent' | 'get' | 'stat' | 'list' | 'delete';

const PERMISSION: Record<Op, string> = {
  put: 's3:PutObject',
  putIfAbsent: 's3:PutObject',
  get: 's3:GetObject',
  // Without s3:ListBucket, S3 answers 403 instead of 404 for a missing key.
  stat: 's3:GetObject (and s3:ListBucket, or a missing key reads as 403)',
  list: 's3:ListBucket',
  delete: 's3:DeleteObject',
};

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}
function nameOf(err: unknown): string | undefined {
  const e = err as { name?: string; Code?: string; code?: string };
  return e?.Code ?? e?.name ?? e?.code;
}
function isNotFound(err: unknown): boolean {
  const name = nameOf(err);
  if (name === 'NoSuchBucket') return false;
  return statusOf(err) === 404 || name === 'NoSuchKey' || name === 'NotFound';
}
function notFound(): Error {
  return Object.assign(new Error('NoSuchKey'), { name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } });
}

const TRANSIENT_NAMES = new Set([
  'SlowDown',
  'ThrottlingException',
  'Throttling',
  'RequestThrottled',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
]);

/** Turns what the S3 SDK threw into one of Tender's named errors; messages name the place and the fix. */
export function mapS3Error(
  err: unknown,
  ctx: { op: Op; key: string; location: string; bucket: string; resource: string },
): Error {
  if (err instanceof Error && 'retryable' in err) return err; // already ours
  const e = err as Error & { code?: string };
  const status = statusOf(err);
  const name = nameOf(err);
  const what = `${ctx.location} ${ctx.op} "${ctx.key}"`;
  const detail = e?.message && e.message !== name ? `${name}: ${e.message}` : String(name ?? e);
  if (name === 'NoSuchBucket') {
    return new ConfigError(`${what}: bucket "${ctx.bucket}" does not exist; create it or fix the repository URL`, { cause: err });
  }
  if (isNotFound(err)) return new NotFoundError(`${what}: no such object`, { cause: err });
  if (status === 403 || name === 'AccessDenied' || name === 'Forbidden') {
    return new AccessDeniedError(
      `${what}: access denied to bucket "${ctx.bucket}"; grant ${PERMISSION[ctx.op]} on ${ctx.op === 'list' ? `arn:aws:s3:::${ctx.bucket}` : ctx.resource} ` +
        `to the worker's role (check the bucket policy and KMS key policy too) (${detail})`,
      { cause: err },
    );
  }
  if (
    status === 429 ||
    (status !== undefined && status >= 500) ||
    TRANSIENT_NAMES.has(name ?? '') ||
    TRANSIENT_NAMES.has(e?.code ?? '') ||
    (err as { $retryable?: unknown })?.$retryable !== undefined
  ) {
    return new TransientError(`${what}: S3 failed transiently (${status ?? 'no response'} ${detail}); retry`, { cause: err });
  }
  return new Error(`${what} failed (${status ?? 'no response'} ${detail})`, { cause: err });
}

