// ObjectStore on a local folder: the repository of the local embedded default,
// and of any worker that writes to a mounted disk. Keys map to relative paths
// (`index/ab/cd` → `<dir>/index/ab/cd`).
//
// Readers never see a partial object: every write goes to a temp file in the
// target's own folder (same filesystem, so rename/link are atomic), is flushed,
// and only then becomes visible under its key. A process killed mid-write leaves
// at most a `.tender-tmp-*` file, which `list` never reports.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, opendir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type { GetRange, ObjectInfo, ObjectReader, ObjectStore } from '../ports/object-store.js';
import { AccessDeniedError, ConfigError, NotFoundError, TransientError } from '../core/errors.js';
import { DirectIoRefusedError, openDirect, writeAll, writeDirect } from './direct-io.js';

const TMP_MARK = '.tender-tmp-';

export interface FolderStoreOptions {
  /**
   * Flush each object to disk before it becomes visible (default true). Without
   * it a power loss can leave a visible object with missing contents; a killed
   * process cannot. Tests may turn it off for speed.
   */
  fsync?: boolean;
  /**
   * Write objects of at least this many bytes (packs) with direct I/O, bypassing the page
   * cache (default 1 MiB when fsync is on, never when it is off). They are flushed to the
   * device before they become visible anyway, and filling fresh page-cache pages is what
   * made large writes slow (shared/local/direct-io.ts). Reads stay buffered: the device
   * fills the cache without that cost, and a direct read would need a copy and memory more.
   * 0 turns it off.
   */
  directMinBytes?: number;
}

const DEFAULT_DIRECT_MIN = 1024 * 1024;

export function createFolderStore(dir: string, opts: FolderStoreOptions = {}): ObjectStore {
  if (!dir) throw new ConfigError('createFolderStore: a folder is required (e.g. /var/backups/tender)');
  const root = resolve(dir);
  const fsync = opts.fsync ?? true;
  const directMin = opts.directMinBytes ?? (fsync ? DEFAULT_DIRECT_MIN : 0);
  /** Cleared once the filesystem refuses direct I/O: every later write goes through the cache. */
  let directOk = directMin > 0;
  const location = `file:${root}`;

  const pathOf = (key: string): string => join(root, ...checkKey(key, location).split('/'));

  const fail = (op: string, key: string, err: unknown): never => {
    throw mapFsError(err, op, location, key);
  };

  /** A rename or link survives a power loss only once its folder is flushed too. */
  async function syncDir(path: string): Promise<void> {
    if (!fsync) return;
    const fh = await open(path, 'r');
    try {
      await fh.sync();
    } catch (err) {
      // Some filesystems (and all of Windows) cannot fsync a folder; the rename still happened.
      if (!['EINVAL', 'EPERM', 'EISDIR', 'ENOTSUP'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    } finally {
      await fh.close();
    }
  }

  /**
   * Folders stand for key prefixes, so "a" and "a/b" cannot both be objects here
   * (S3 and Blob allow it). Say so rather than report a confusing errno.
   */
  const failPut = async (op: string, key: string, target: string, err: unknown): Promise<never> => {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'EEXIST') {
      throw new ConfigError(
        `${location} ${op} "${key}": the name collides with ` +
          ((await stat(target).catch(() => undefined))?.isDirectory()
            ? `a folder of other objects ("${key}/...")`
            : `an object on the way to it (a parent of "${key}")`) +
          `; the folder store cannot hold both "x" and "x/y" as objects, so choose keys where no key is a folder of another`,
        { cause: err },
      );
    }
    return fail(op, key, err);
  };

  /** Writes a complete, flushed temp file next to where `key` will live. */
  async function writeTemp(target: string, data: Uint8Array): Promise<string> {
    const tmp = join(dirname(target), `${TMP_MARK}${randomBytes(8).toString('hex')}`);
    await mkdir(dirname(target), { recursive: true });
    if (directOk && data.byteLength >= directMin) {
      const fh = await openDirect(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL);
      if (fh) {
        try {
          if (await writeDirect(fh, data, 0)) await fh.truncate(data.byteLength);
          await fh.sync();
          await fh.close();
          return tmp;
        } catch (err) {
          await fh.close().catch(() => undefined);
          await unlink(tmp).catch(() => undefined);
          if (!(err instanceof DirectIoRefusedError)) throw err;
        }
      }
      directOk = false;
    }
    const fh = await open(tmp, 'wx');
    try {
      await writeAll(fh, data, 0, data.byteLength, 0);
      if (fsync) await fh.sync();
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await fh.close();
    return tmp;
  }

  return {
    location,

    async put(key, data) {
      const target = pathOf(key);
      try {
        const tmp = await writeTemp(target, data);
        try {
          await rename(tmp, target);
        } catch (err) {
          await unlink(tmp).catch(() => undefined);
          throw err;
        }
        await syncDir(dirname(target));
      } catch (err) {
        await failPut('put', key, target, err);
      }
    },

    async putIfAbsent(key, data) {
      const target = pathOf(key);
      try {
        const tmp = await writeTemp(target, data);
        // link() fails with EEXIST when the name is taken, and publishes the
        // already-complete file otherwise: create-if-absent with no partial state.
        try {
          await link(tmp, target);
          await syncDir(dirname(target));
          return true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
            if ((await stat(target).catch(() => undefined))?.isDirectory()) throw err;
            return false;
          }
          if (['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes((err as NodeJS.ErrnoException).code ?? '')) {
            throw new ConfigError(
              `${location}: this filesystem does not support hard links, which the folder store needs for ` +
                `conditional writes (locks); put the repository on a local POSIX filesystem (ext4, xfs, apfs)`,
              { cause: err },
            );
          }
          throw err;
        } finally {
          await unlink(tmp).catch(() => undefined);
        }
      } catch (err) {
        return failPut('putIfAbsent', key, target, err);
      }
    },

    async get(key, range?: GetRange) {
      const path = pathOf(key);
      if (range && !(Number.isSafeInteger(range.offset) && range.offset >= 0 && Number.isSafeInteger(range.length) && range.length >= 0)) {
        throw new RangeError(`${location} get "${key}": range offset and length must be whole numbers ≥ 0 (got ${range.offset}, ${range.length})`);
      }
      try {
        const fh = await open(path, 'r');
        try {
          const size = (await fh.stat()).size;
          const start = Math.min(range?.offset ?? 0, size);
          const end = range ? Math.min(size, range.offset + range.length) : size;
          const out = new Uint8Array(Math.max(0, end - start));
          let off = 0;
          while (off < out.byteLength) {
            const { bytesRead } = await fh.read(out, off, out.byteLength - off, start + off);
            if (bytesRead === 0) break; // only if something truncated the file under us
            off += bytesRead;
          }
          return off === out.byteLength ? out : out.subarray(0, off);
        } finally {
          await fh.close();
        }
      } catch (err) {
        return fail('get', key, err);
      }
    },

    async openReader(key): Promise<ObjectReader> {
      const path = pathOf(key);
      let fh: FileHandle | undefined;
      try {
        fh = await open(path, 'r');
        // A folder of other objects is no object (as for get).
        if (!(await fh.stat()).isFile()) throw Object.assign(new Error('a folder'), { code: 'EISDIR' });
      } catch (err) {
        await fh?.close().catch(() => undefined);
        return fail('openReader', key, err);
      }
      const file = fh;
      return {
        async read(offset, target) {
          if (!(Number.isSafeInteger(offset) && offset >= 0)) {
            throw new RangeError(`${location} read of "${key}": the offset must be a whole number ≥ 0 (got ${offset})`);
          }
          try {
            let off = 0;
            while (off < target.byteLength) {
              const { bytesRead } = await file.read(target, off, target.byteLength - off, offset + off);
              if (bytesRead === 0) break; // the end of the file
              off += bytesRead;
            }
            return off;
          } catch (err) {
            return fail('read', key, err);
          }
        },
        close: () => file.close(),
      };
    },

    async stat(key) {
      const path = pathOf(key);
      try {
        const st = await stat(path);
        if (!st.isFile()) return undefined;
        return { key, size: st.size, modified: st.mtime };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
        return fail('stat', key, err);
      }
    },

    list(prefix: string): AsyncIterable<ObjectInfo> {
      if (prefix !== '') checkKey(prefix, location, true);
      // Walk only the deepest folder the prefix names completely; the rest of
      // the prefix filters names inside it.
      const cut = prefix.lastIndexOf('/');
      const base = cut < 0 ? '' : prefix.slice(0, cut);
      return walk(root, base, prefix, location);
    },

    async delete(key) {
      const path = pathOf(key);
      try {
        await unlink(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return;
        // A folder under this name means "no object here" for an object store.
        if (code === 'EISDIR' || code === 'EPERM') {
          const st = await stat(path).catch(() => undefined);
          if (st?.isDirectory()) return;
        }
        fail('delete', key, err);
      }
    },
  };
}

async function* walk(root: string, base: string, prefix: string, location: string): AsyncGenerator<ObjectInfo> {
  const pending: string[] = [base];
  while (pending.length > 0) {
    const rel = pending.pop()!;
    const abs = rel === '' ? root : join(root, ...rel.split('/'));
    let dir;
    try {
      dir = await opendir(abs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw mapFsError(err, 'list', location, prefix);
    }
    for await (const ent of dir) {
      if (ent.name.startsWith(TMP_MARK)) continue;
      const key = rel === '' ? ent.name : `${rel}/${ent.name}`;
      if (ent.isDirectory()) {
        // Descend only where keys can still start with the prefix.
        if (key.startsWith(prefix) || prefix.startsWith(key + '/')) pending.push(key);
        continue;
      }
      if (!ent.isFile() || !key.startsWith(prefix)) continue;
      try {
        const st = await stat(join(abs, ent.name));
        yield { key, size: st.size, modified: st.mtime };
      } catch (err) {
        // Deleted between readdir and stat: it was not there when we looked.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw mapFsError(err, 'list', location, key);
      }
    }
  }
}

/**
 * Keys are relative, `/`-separated paths. Anything that could escape the folder
 * or collide with the store's own temp files is refused.
 */
function checkKey(key: string, location: string, isPrefix = false): string {
  const what = isPrefix ? 'prefix' : 'key';
  const bad = (why: string) =>
    new ConfigError(`${location}: invalid object ${what} "${key}": ${why}; use a relative path like "index/ab12"`);
  if (typeof key !== 'string' || key === '') throw bad('it is empty');
  if (key.includes('\0')) throw bad('it contains a NUL byte');
  if (key.includes('\\')) throw bad('it contains a backslash');
  if (key.startsWith('/') || isAbsolute(key) || /^[A-Za-z]:/.test(key)) throw bad('it is an absolute path');
  const parts = key.split('/');
  // A prefix may end in "/" (a folder) or in a partial name.
  const named = isPrefix && parts[parts.length - 1] === '' ? parts.slice(0, -1) : parts;
  for (const p of named) {
    if (p === '' ) throw bad('it has an empty path segment');
    if (p === '.' || p === '..') throw bad('it contains "." or ".." segments');
    if (p.startsWith(TMP_MARK)) throw bad(`names starting with "${TMP_MARK}" are reserved for temp files`);
  }
  if (sep !== '/' && key.includes(sep)) throw bad(`it contains "${sep}"`);
  return key;
}

function mapFsError(err: unknown, op: string, location: string, key: string): Error {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && 'retryable' in e) return e as Error; // already one of ours
  const where = `${location} ${op} "${key}"`;
  switch (e?.code) {
    case 'ENOENT':
    case 'EISDIR':
    case 'ENOTDIR':
      return new NotFoundError(`${where}: no such object`, { cause: err });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new AccessDeniedError(
        `${where}: permission denied (${e.code}); the worker's user needs read and write access to ${location.slice(5)} and its subfolders`,
        { cause: err },
      );
    case 'EMFILE':
    case 'ENFILE':
    case 'EAGAIN':
    case 'EBUSY':
    case 'EINTR':
      return new TransientError(`${where}: temporarily unavailable (${e.code}); retry`, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new Error(`${where}: no space left on the device holding ${location.slice(5)}; free space or move the repository`, { cause: err });
    default:
      return new Error(`${where} failed: ${e?.message ?? String(err)}`, { cause: err });
  }
}
