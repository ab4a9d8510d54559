// An ObjectStore in memory, for unit tests of the data mover (the contract
// suite in test/stores holds the real stores to the same behaviour).
import type { GetRange, ObjectInfo, ObjectReader, ObjectStore } from '../../shared/ports/object-store.js';
import { NotFoundError } from '../../shared/core/errors.js';

export interface MemoryStore extends ObjectStore {
  readonly objects: Map<string, { data: Buffer; modified: Date }>;
}

export interface MemoryStoreOptions {
  /** Give the store openReader, as a local folder has: readers then read block by block. */
  readers?: boolean;
}

export function createMemoryStore(now: () => Date = () => new Date(), opts: MemoryStoreOptions = {}): MemoryStore {
  const objects = new Map<string, { data: Buffer; modified: Date }>();
  const openReader = async (key: string): Promise<ObjectReader> => {
    const o = objects.get(key);
    if (!o) throw new NotFoundError(`memory:${key} does not exist`);
    // The object as it is now: a put meanwhile replaces the entry, not these bytes.
    const data = o.data;
    let closed = false;
    return {
      async read(offset, target) {
        if (closed) throw new Error(`memory:${key}: read after close`);
        const part = data.subarray(Math.min(offset, data.length), Math.min(data.length, offset + target.byteLength));
        target.set(part);
        return part.length;
      },
      async close() {
        closed = true;
      },
    };
  };
  return {
    ...(opts.readers ? { openReader } : {}),
    location: 'memory:',
    objects,
    async put(key, data) {
      objects.set(key, { data: Buffer.from(data), modified: now() });
    },
    async putIfAbsent(key, data) {
      if (objects.has(key)) return false;
      objects.set(key, { data: Buffer.from(data), modified: now() });
      return true;
    },
    async get(key, range?: GetRange) {
      const o = objects.get(key);
      if (!o) throw new NotFoundError(`memory:${key} does not exist`);
      if (!range) return Buffer.from(o.data);
      return Buffer.from(o.data.subarray(range.offset, range.offset + range.length));
    },
    async stat(key) {
      const o = objects.get(key);
      return o ? { key, size: o.data.length, modified: o.modified } : undefined;
    },
    async *list(prefix): AsyncIterable<ObjectInfo> {
      for (const [key, o] of [...objects]) if (key.startsWith(prefix)) yield { key, size: o.data.length, modified: o.modified };
    },
    async delete(key) {
      objects.delete(key);
    },
  };
}
