// Small JSON documents in one blob container of the Function app's storage
// account: the catalog, the grants made per (run, VM), the job status folded
// from the worker's reports. Activities run on whichever instance the host
// picks, so nothing between two activities may live in memory; it lives here.
// Writes carry the ETag they read, so two activities folding the same
// document cannot lose each other's update.

import type { ContainerClient } from '@azure/storage-blob';
import { TransientError } from '../core/errors.js';
import { azureCodeOf, azureStatusOf, isNotFound, normaliseArmError } from './arm-errors.js';

export interface StateStore {
  /** The document and its ETag, or undefined when there is none. */
  read<T>(key: string): Promise<{ value: T; etag: string } | undefined>;
  /** Writes unconditionally (last writer wins). */
  write(key: string, value: unknown): Promise<void>;
  /**
   * Read-modify-write: `fn` gets the current value (undefined when absent) and
   * returns the new one; retried when another writer got there first.
   */
  update<T>(key: string, fn: (current: T | undefined) => T): Promise<T>;
  list<T>(prefix: string): Promise<Array<{ key: string; value: T }>>;
  delete(key: string): Promise<void>;
}

export function createBlobStateStore(opts: { container: ContainerClient; prefix?: string }): StateStore {
  const prefix = opts.prefix ?? '';
  const where = `state container ${opts.container.containerName}`;
  let ensured: Promise<unknown> | undefined;
  const ensure = () => (ensured ??= opts.container.createIfNotExists().catch((e) => {
    ensured = undefined;
    throw normaliseArmError(e, `creating the ${where}`);
  }));

  async function read<T>(key: string): Promise<{ value: T; etag: string } | undefined> {
    try {
      // One download gives the body and the ETag of that very body.
      const res = await opts.container.getBlockBlobClient(prefix + key).download();
      const chunks: Buffer[] = [];
      for await (const c of res.readableStreamBody ?? []) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
      return { value: JSON.parse(Buffer.concat(chunks).toString('utf8')) as T, etag: res.etag ?? '' };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw normaliseArmError(e, `reading ${key} from the ${where}`);
    }
  }

  async function put(key: string, value: unknown, conditions?: { ifMatch?: string; ifNoneMatch?: string }): Promise<boolean> {
    await ensure();
    const body = JSON.stringify(value, null, 2);
    try {
      await opts.container.getBlockBlobClient(prefix + key).upload(body, Buffer.byteLength(body), {
        blobHTTPHeaders: { blobContentType: 'application/json' },
        ...(conditions ? { conditions } : {}),
      });
      return true;
    } catch (e) {
      const status = azureStatusOf(e);
      if (conditions && (status === 412 || status === 409 || azureCodeOf(e) === 'ConditionNotMet' || azureCodeOf(e) === 'BlobAlreadyExists')) return false;
      throw normaliseArmError(e, `writing ${key} to the ${where}`);
    }
  }

  return {
    read,
    async write(key, value) {
      await put(key, value);
    },
    async update<T>(key: string, fn: (current: T | undefined) => T): Promise<T> {
      // Read-modify-write rarely collides (one activity per (run, VM) at a time), so a few tries are plenty.
      for (let attempt = 0; attempt < 8; attempt++) {
        const cur = await read<T>(key);
        const next = fn(cur?.value);
        const ok = await put(key, next, cur ? { ifMatch: cur.etag } : { ifNoneMatch: '*' });
        if (ok) return next;
      }
      throw new TransientError(`${key} in the ${where} kept changing under us; it is retried`);
    },
    async list<T>(listPrefix: string) {
      const out: Array<{ key: string; value: T }> = [];
      try {
        for await (const item of opts.container.listBlobsFlat({ prefix: prefix + listPrefix })) {
          const key = item.name.slice(prefix.length);
          const doc = await read<T>(key);
          if (doc) out.push({ key, value: doc.value });
        }
      } catch (e) {
        if (isNotFound(e)) return out;
        throw normaliseArmError(e, `listing ${listPrefix} in the ${where}`);
      }
      return out;
    },
    async delete(key) {
      try {
        await opts.container.getBlockBlobClient(prefix + key).deleteIfExists();
      } catch (e) {
        if (isNotFound(e)) return;
        throw normaliseArmError(e, `deleting ${key} from the ${where}`);
      }
    },
  };
}

/** An in-memory StateStore with the same contract, for unit tests of the adapters. */
export function createMemoryStateStore(): StateStore & { docs: Map<string, unknown> } {
  const docs = new Map<string, unknown>();
  const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
  return {
    docs,
    async read<T>(key: string) {
      return docs.has(key) ? { value: clone(docs.get(key) as T), etag: '' } : undefined;
    },
    async write(key, value) {
      docs.set(key, clone(value));
    },
    async update<T>(key: string, fn: (current: T | undefined) => T) {
      const next = fn(docs.has(key) ? clone(docs.get(key) as T) : undefined);
      docs.set(key, clone(next));
      return next;
    },
    async list<T>(prefix: string) {
      return [...docs.entries()].filter(([k]) => k.startsWith(prefix)).map(([key, value]) => ({ key, value: clone(value as T) }));
    },
    async delete(key) {
      docs.delete(key);
    },
  };
}
