// Opens the repository's object store from the URL a user or the pipeline gives:
//   file:/abs/path  file:///abs/path  file:relative/path (against cwd)
//   s3://bucket[/prefix]              default AWS credential chain; TENDER_S3_ENDPOINT
//                                     points at an S3-compatible server (path-style)
//   azblob://account/container[/prefix]
//                                     TENDER_AZURE_STORAGE_CONNECTION_STRING (e.g. Azurite)
//                                     or DefaultAzureCredential; TENDER_AZURE_BLOB_ENDPOINT
//                                     overrides https://<account>.blob.core.windows.net
// The store comes back wrapped in withRetry, and the clients made here have
// their SDK retries turned off, so exactly one layer retries (full jitter).
// Do not wrap it in withRetry again.
import { isAbsolute, resolve } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { BlobServiceClient } from '@azure/storage-blob';
import type { ObjectStore } from '../shared/ports/object-store.js';
import { ConfigError } from '../shared/core/errors.js';
import { withRetry, type RetryOptions } from '../shared/core/store-wrappers.js';
import { createFolderStore } from '../shared/local/folder-store.js';

export interface OpenStoreOptions {
  /** Used for s3:// URLs instead of a client from the default credential chain. */
  s3Client?: S3Client;
  /** Used for azblob:// URLs instead of one from the environment. */
  blobServiceClient?: BlobServiceClient;
  /** Base of relative file: URLs (default process.cwd()). */
  cwd?: string;
  /** Environment to read TENDER_* settings from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Retry policy of the returned store; false returns the bare store. */
  retry?: RetryOptions | false;
}

export const DEFAULT_STORE_RETRY: RetryOptions = { attempts: 6, baseMs: 200, maxMs: 20_000 };

const EXAMPLES = 'file:/var/backups/tender, s3://my-bucket/tender, azblob://myaccount/backups/tender';

export async function openStoreFromUrl(url: string, opts: OpenStoreOptions = {}): Promise<ObjectStore> {
  const store = await openBare(url, opts);
  return opts.retry === false ? store : withRetry(store, opts.retry ?? DEFAULT_STORE_RETRY);
}

async function openBare(url: string, opts: OpenStoreOptions): Promise<ObjectStore> {
  const env = opts.env ?? process.env;
  const bad = (why: string) => new ConfigError(`repository URL "${redactUrl(url)}": ${why} (examples: ${EXAMPLES})`);
  if (typeof url !== 'string' || url.trim() === '') throw bad('it is empty');
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):(.*)$/s.exec(url);
  // "C:\..." would look like a scheme; nobody means a one-letter scheme.
  if (!m || m[1]!.length === 1) throw bad(`it has no scheme; for a local folder write file:${url}`);
  const scheme = m[1]!.toLowerCase();
  const rest = m[2]!;

  switch (scheme) {
    case 'file':
      return createFolderStore(filePath(rest, opts.cwd ?? process.cwd(), bad));
    case 's3':
      return openS3(rest, opts, env, bad);
    case 'azblob':
      return openAzure(rest, opts, env, bad);
    default:
      throw bad(`scheme "${scheme}:" is not supported; use file:, s3:// or azblob://`);
  }
}

function filePath(rest: string, cwd: string, bad: (why: string) => Error): string {
  if (rest.includes('?') || rest.includes('#')) throw bad('a file: URL takes no query or fragment');
  let path = rest;
  if (rest.startsWith('//')) {
    const slash = rest.indexOf('/', 2);
    const host = slash < 0 ? rest.slice(2) : rest.slice(2, slash);
    if (host !== '' && host !== 'localhost') throw bad(`file: URLs name local folders only, not host "${host}"`);
    path = slash < 0 ? '' : rest.slice(slash);
  }
  try {
    path = decodeURIComponent(path);
  } catch {
    throw bad('it has a malformed %-escape');
  }
  if (path === '') throw bad('it names no folder');
  if (path.includes('\0')) throw bad('it contains a NUL byte');
  return isAbsolute(path) ? path : resolve(cwd, path);
}

function splitPath(rest: string, scheme: string, bad: (why: string) => Error): string[] {
  if (!rest.startsWith('//')) throw bad(`write ${scheme}://…, with two slashes`);
  if (rest.includes('?') || rest.includes('#')) throw bad('it takes no query or fragment; settings come from the environment');
  if (rest.includes('@')) throw bad('credentials never go in the URL; they come from the environment');
  return rest.slice(2).split('/');
}

async function openS3(rest: string, opts: OpenStoreOptions, env: NodeJS.ProcessEnv, bad: (why: string) => Error): Promise<ObjectStore> {
  const [bucket = '', ...prefixParts] = splitPath(rest, 's3', bad);
  // Bucket naming rules (general purpose buckets): 3–63 of a-z 0-9 . -, starting and ending alphanumeric.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes('..')) {
    throw bad(`"${bucket}" is not a valid S3 bucket name (3–63 characters: lowercase letters, digits, "." and "-")`);
  }
  const prefix = prefixParts.join('/');
  const { createS3Store } = await import('../shared/aws/s3-store.js');
  let client = opts.s3Client;
  if (!client) {
    const { S3Client } = await import('@aws-sdk/client-s3');
    const endpoint = env.TENDER_S3_ENDPOINT?.trim() || undefined;
    if (endpoint && !/^https?:\/\/[^/]/.test(endpoint)) {
      throw new ConfigError(`TENDER_S3_ENDPOINT "${endpoint}" must be an http(s) URL such as http://127.0.0.1:9000`);
    }
    const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || (endpoint ? 'us-east-1' : undefined);
    client = new S3Client({
      ...(region ? { region } : {}),
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      // withRetry is the one retry layer.
      maxAttempts: 1,
      // The SDK sets no timeouts by default, and a hung transfer hangs the backup.
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
    });
  }
  return createS3Store({ client, bucket, prefix });
}

async function openAzure(rest: string, opts: OpenStoreOptions, env: NodeJS.ProcessEnv, bad: (why: string) => Error): Promise<ObjectStore> {
  const [account = '', container = '', ...prefixParts] = splitPath(rest, 'azblob', bad);
  if (!/^[a-z0-9]{3,24}$/.test(account)) {
    throw bad(`"${account}" is not a valid storage account name (3–24 lowercase letters and digits)`);
  }
  if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(container) && container !== '$root') {
    throw bad(
      container === ''
        ? 'it names no container; write azblob://<account>/<container>[/prefix]'
        : `"${container}" is not a valid container name (3–63 lowercase letters, digits and single hyphens)`,
    );
  }
  const prefix = prefixParts.join('/');
  const { createBlobStore } = await import('../shared/azure/blob-store.js');
  let service = opts.blobServiceClient;
  if (!service) {
    const { BlobServiceClient } = await import('@azure/storage-blob');
    // withRetry is the one retry layer; tryTimeout keeps a stalled request from hanging the run.
    const pipelineOptions = { retryOptions: { maxTries: 1, tryTimeoutInMs: 10 * 60_000 } };
    const conn = env.TENDER_AZURE_STORAGE_CONNECTION_STRING?.trim();
    if (conn) {
      try {
        service = BlobServiceClient.fromConnectionString(conn, pipelineOptions);
      } catch (err) {
        throw new ConfigError(
          `TENDER_AZURE_STORAGE_CONNECTION_STRING is not a usable connection string (${(err as Error).message.split('\n')[0]}); ` +
            'copy it from the storage account\'s "Access keys" page, or unset it to sign in with DefaultAzureCredential',
          { cause: err },
        );
      }
      if (service.accountName && service.accountName !== account) {
        throw bad(
          `it names account "${account}" but TENDER_AZURE_STORAGE_CONNECTION_STRING is for account "${service.accountName}"; make them agree`,
        );
      }
    } else {
      const { DefaultAzureCredential } = await import('@azure/identity');
      const endpoint = env.TENDER_AZURE_BLOB_ENDPOINT?.trim() || `https://${account}.blob.core.windows.net`;
      service = new BlobServiceClient(endpoint, new DefaultAzureCredential(), pipelineOptions);
    }
  }
  return createBlobStore({ containerClient: service.getContainerClient(container), prefix });
}

/** URLs never carry secrets here, but a user may paste one with a SAS or user:password: keep those out of messages. */
function redactUrl(url: string): string {
  return typeof url === 'string' ? url.replace(/\?.*$/s, '?[redacted]').replace(/\/\/[^/]*@/, '//[redacted]@') : String(url);
}
