// A Tender repository on any ObjectStore: keys, config, the in-memory block
// index, and sealed metadata objects. Layout and byte formats are written down
// in docs/repository-format.md; this file is the only place that opens them.

import { createHash, randomBytes } from 'node:crypto';
import type { ObjectStore } from '../shared/ports/object-store.js';
import { AccessDeniedError, CorruptObjectError, NotFoundError, RepositoryError, WrongPassphraseError, toError } from '../shared/core/errors.js';
import { aadFor, describeSecret, newMasterKey, open, seal, unwrapMasterKey, wrapMasterKey, type KeyRecord, type MasterKey, type RepositorySecret } from './crypto.js';
import {
  DEFAULT_BLOCK_SIZE,
  DEFAULT_PACK_SIZE,
  FORMAT_VERSION,
  BLOCK_ID_FUNCTIONS,
  type BlockIdFunction,
  headerLengthFromTrailer,
  indexFileFor,
  packIdFromKey,
  packKey,
  parsePackHeader,
  type BlobLocation,
  type IndexFile,
  type Manifest,
  type PackEntry,
} from './format.js';
import { CodecPool, CodecThreads, type ZstdParams } from './codec-pool.js';
import { BlockIndex } from './block-index.js';
import { compressObject, decompressObject, loadZstd } from './zstd.js';

export interface RepoConfig {
  version: number;
  id: string;
  blockSize: number;
  packSize: number;
  /** params override the level's (absent in repositories made before they existed). */
  compression: { codec: 'zstd'; level: number; params?: ZstdParams };
  /** Format 2: how block IDs are made. Absent in format 1, whose IDs are HMAC-SHA-256. */
  blockId?: BlockIdFunction;
  created: string;
}

/** The block ID function a repository's config names. */
export function blockIdFunctionOf(config: RepoConfig): BlockIdFunction {
  return config.blockId ?? 'hmac-sha256';
}

export interface RepositoryOptions {
  /** Codec threads (default: every core). */
  threads?: number;
  now?: () => Date;
  /**
   * Start the codec threads while the key is unwrapped, and hand them their keys and settings
   * once the config is read: they are up by the time the first block is (a backup opens with this).
   */
  startCodecs?: boolean;
  /** List the packs while the key is unwrapped, for a backup's first step (`packListing`). */
  listPacks?: boolean;
  /**
   * Prefixes whose objects are fetched while the key is unwrapped (scrypt, or a KMS call), for
   * the first read of each to use (`objectsUnder`). `index/` always is.
   */
  prefetch?: string[];
}

/** An object as stored: for metadata, still sealed. */
export interface StoredObject {
  key: string;
  bytes: Uint8Array;
}

/** Lists a prefix, then reads every object in it (8 at a time); one deleted since the listing is left out. */
async function fetchObjectsUnder(store: ObjectStore, prefix: string): Promise<StoredObject[]> {
  const keys: string[] = [];
  for await (const o of store.list(prefix)) keys.push(o.key);
  const out: StoredObject[] = [];
  await mapLimit(keys, 8, async (key) => {
    try {
      out.push({ key, bytes: await store.get(key) });
    } catch (e) {
      // An index file replaced by a prune since the listing (its packs are in the prune's new
      // index), a deletion record a prune finished, a restore point forgotten.
      if (!(e instanceof NotFoundError)) throw e;
    }
  });
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

const CODEC_NONE = 0;
const CODEC_ZSTD = 1;

/**
 * Blocks one index file names at most (about 9 MiB of JSON; 50 GiB of unique 512 KiB blocks).
 * Index files are JSON read whole: one for every block of a multi-TiB repository — what prune
 * would otherwise write — is longer than the longest string V8 can make or parse.
 */
export const INDEX_FILE_MAX_BLOBS = 100_000;

/** An object that could not be read (named, with why), skipped by a reader that can go on without it. */
export interface DamagedObject {
  object: string;
  message: string;
}

/**
 * Opens one sealed metadata object with `open`. One that does not authenticate or parse throws —
 * unless `damaged` is given: then it is named there and undefined returned, so a reader that can
 * go on without it does.
 */
export function openOrNoteDamage<T>(key: string, what: string, damaged: DamagedObject[] | undefined, open: () => T): T | undefined {
  try {
    return open();
  } catch (e) {
    if (!damaged || !(e instanceof CorruptObjectError || e instanceof SyntaxError)) throw e;
    damaged.push({ object: key, message: e instanceof CorruptObjectError ? e.message.slice(e.objectKey.length + 2) : `is not ${what} (${e.message})` });
    return undefined;
  }
}

/** Plaintext of a `deletions/<id>` object: packs a prune marked, to delete after the safety margin. */
export interface DeletionRecord {
  version: 1;
  marked: string;
  packs: string[];
}

export class Repository {
  /** Block ID → where it is stored (see block-index.ts: about 55 bytes a distinct block). */
  readonly index = new BlockIndex();
  /** Packs some index file names. */
  readonly indexedPacks = new Map<string, number>();
  /** Index files read by load(), for prune to replace. */
  readonly indexFiles = new Set<string>();
  private pool?: CodecPool;
  /** Pools ended by releaseCodecs, still exiting. */
  private closing: Array<Promise<void>> = [];
  private compressedByEndedPools = 0;
  /** Sealed objects fetched while the key was unwrapped, by prefix: each is used once. */
  private readonly prefetched: Map<string, Promise<StoredObject[]>>;
  readonly now: () => Date;

  constructor(
    readonly store: ObjectStore,
    readonly key: MasterKey,
    readonly config: RepoConfig,
    private readonly options: RepositoryOptions = {},
    prefetched: Map<string, Promise<StoredObject[]>> = new Map(),
    private startedThreads?: CodecThreads,
  ) {
    this.now = options.now ?? (() => new Date());
    this.prefetched = prefetched;
  }

  get location(): string {
    return this.store.location;
  }

  codecs(): CodecPool {
    if (!this.pool) {
      this.pool = new CodecPool({ encryptionKey: this.key.encryption, idKey: this.key.id, blockId: blockIdFunctionOf(this.config), blockSize: this.config.blockSize, level: this.config.compression.level, params: this.config.compression.params, threads: this.options.threads, started: this.startedThreads });
      this.startedThreads = undefined;
    }
    return this.pool;
  }

  /**
   * Ends the codec threads in the background, for a caller done with blocks (a backup whose
   * blocks are all sealed: its last writes then overlap the threads' exit); `close` waits for
   * them, and a later `codecs()` starts new ones. The pool is the repository's one: only one
   * backup at a time may use a Repository (as the ID filter in the pool assumes too).
   */
  releaseCodecs(): void {
    const pool = this.pool;
    this.pool = undefined;
    if (!pool) return;
    this.compressedByEndedPools += pool.compressed;
    this.closing.push(pool.close());
  }

  /** Blocks compressed and sealed through this repository, by every codec pool it has had. */
  get blocksCompressed(): number {
    return this.compressedByEndedPools + (this.pool?.compressed ?? 0);
  }

  async close(): Promise<void> {
    await Promise.all([this.pool?.close(), this.startedThreads?.terminate(), ...this.closing]);
    this.pool = undefined;
    this.startedThreads = undefined;
    this.closing = [];
  }

  /** Compresses, seals and stores a metadata object; its name is bound into the seal. */
  sealObject(kind: string, name: string, plaintext: Uint8Array): Buffer {
    const packed = compressObject(plaintext, 3);
    return seal(this.key.encryption, Buffer.concat([Buffer.of(CODEC_ZSTD), packed]), aadFor(kind, name));
  }

  openObject(objectKey: string, kind: string, name: string, sealed: Uint8Array): Buffer {
    const plain = open(this.key.encryption, sealed, aadFor(kind, name));
    if (!plain) throw new CorruptObjectError(objectKey, 'does not authenticate: it was damaged or not written by a holder of this repository\'s key — run `tender-worker verify` and restore from another restore point');
    if (plain[0] === CODEC_NONE) return plain.subarray(1);
    if (plain[0] === CODEC_ZSTD) return decompressObject(plain.subarray(1));
    throw new CorruptObjectError(objectKey, `unknown codec ${plain[0]}: written by a newer Tender? Upgrade tender-worker`);
  }

  async getObject(objectKey: string): Promise<Uint8Array> {
    try {
      return await this.store.get(objectKey);
    } catch (e) {
      if (e instanceof NotFoundError) throw new CorruptObjectError(objectKey, 'is missing from the repository', { cause: e });
      throw e;
    }
  }

  /**
   * Every object under a prefix, as stored (still sealed). The first call for a prefix the
   * repository fetched while it opened (see `prefetch`) returns that copy; every other call
   * reads the store again.
   */
  objectsUnder(prefix: string): Promise<StoredObject[]> {
    const fetched = this.prefetched.get(prefix);
    if (fetched) {
      this.prefetched.delete(prefix);
      return fetched;
    }
    return fetchObjectsUnder(this.store, prefix);
  }

  /** Drops what the open fetched and nobody read: from now on every read goes to the store. */
  forgetPrefetched(): void {
    this.prefetched.clear();
  }

  /**
   * Every index file, parsed (prune needs every location, not only the first per block). One that
   * cannot be read throws, unless `damaged` is given: then it is skipped and named there.
   */
  async readIndexFiles(damaged?: DamagedObject[]): Promise<Array<{ key: string; file: IndexFile }>> {
    const out: Array<{ key: string; file: IndexFile }> = [];
    for (const { key, bytes } of await this.objectsUnder('index/')) {
      const file = this.parseIndexFile(key, bytes, damaged);
      if (file) out.push({ key, file });
    }
    return out;
  }

  private parseIndexFile(key: string, sealed: Uint8Array, damaged?: DamagedObject[]): IndexFile | undefined {
    return openOrNoteDamage(key, 'an index file', damaged, () => {
      const file = JSON.parse(this.openObject(key, 'index', key.slice('index/'.length), sealed).toString('utf8')) as IndexFile;
      if (!Array.isArray(file?.packs)) throw new CorruptObjectError(key, 'is not an index file');
      return file;
    });
  }

  /**
   * Index files the last load could not read. Their packs were indexed from the packs' own
   * headers instead (`recovered`, which the next backup writes into a new index file).
   */
  damagedIndexFiles: DamagedObject[] = [];
  private recovered: Array<{ id: string; size: number; entries: PackEntry[] }> = [];

  /**
   * Deletion marks prunes have written (packs about to go, or gone while their index files stay).
   * One that cannot be read throws, unless `damaged` is given: then it is skipped and named there.
   */
  async deletionMarks(damaged?: DamagedObject[]): Promise<Array<{ key: string; record: DeletionRecord }>> {
    const out: Array<{ key: string; record: DeletionRecord }> = [];
    for (const { key, bytes } of await this.objectsUnder('deletions/')) {
      const record = openOrNoteDamage(key, 'a deletion mark', damaged, () => {
        const r = JSON.parse(this.openObject(key, 'deletion', key.slice('deletions/'.length), bytes).toString('utf8')) as DeletionRecord;
        if (!Array.isArray(r?.packs)) throw new CorruptObjectError(key, 'is not a deletion mark');
        return r;
      });
      if (record) out.push({ key, record });
    }
    return out;
  }

  /** Packs the deletion marks read when the index was last loaded name. */
  readonly marked = new Set<string>();
  /**
   * Deletion marks the last load could not read. Reading and restoring go on; a backup does not
   * (it cannot tell which packs a prune is about to delete), and the next prune replaces them.
   */
  damagedMarks: DamagedObject[] = [];

  /**
   * Reads every index file into memory: one parsed at a time, so only the compact index grows.
   * A block indexed in a pack a prune has marked and in another pack is found in the other: a
   * prune that stopped after deleting packs leaves index files naming them until the next prune.
   */
  async loadIndex(): Promise<void> {
    this.index.clear();
    this.indexedPacks.clear();
    this.indexFiles.clear();
    this.damagedMarks = [];
    const [objects, marks]: [Array<StoredObject | undefined>, Array<{ key: string; record: DeletionRecord }>] = await Promise.all([this.objectsUnder('index/'), this.deletionMarks(this.damagedMarks)]);
    this.marked.clear();
    for (const m of marks) for (const p of m.record.packs) this.marked.add(p);
    this.damagedIndexFiles = [];
    this.recovered = [];
    for (let i = 0; i < objects.length; i++) {
      const { key, bytes } = objects[i]!;
      objects[i] = undefined;
      // A damaged index file does not make the repository unreadable: its packs carry headers.
      const file = this.parseIndexFile(key, bytes, this.damagedIndexFiles);
      if (!file) continue;
      this.addIndexFile(file);
      this.indexFiles.add(key);
    }
    if (this.damagedIndexFiles.length) await this.indexFromPackHeaders();
  }

  /**
   * Indexes, from their own headers, the packs no readable index file names (in memory only; the
   * next backup writes them down). Returns how many packs it indexed. Used when an index file is
   * damaged, and by restore when a block is in no index (an index file that went missing).
   */
  async indexFromPackHeaders(): Promise<number> {
    const orphans = (await listPacks(this.store)).filter((p) => !this.indexedPacks.has(p.id));
    const before = this.recovered.length;
    await mapLimit(orphans, 8, async (p) => {
      try {
        const entries = await this.readPackHeader(p.id, p.size);
        this.addPack(p.id, p.size, entries);
        this.recovered.push({ ...p, entries });
      } catch (e) {
        // Unreadable (verify --read-data names it) or deleted since the listing: not indexed.
        if (!(e instanceof CorruptObjectError) && !(e instanceof NotFoundError)) throw e;
      }
    });
    return this.recovered.length - before;
  }

  /** Forgets where these packs' blocks are, so they are stored again rather than referenced (packs marked for deletion). */
  avoidPacks(packs: Iterable<string>): void {
    const avoid = new Set(packs);
    if (!avoid.size) return;
    for (const p of avoid) this.avoided.add(p);
    this.index.deletePacks(avoid);
  }

  /** Packs this process will not refer to (marked for deletion, or gone). */
  readonly avoided = new Set<string>();

  /**
   * The pack listing adoptUnindexedPacks uses, when the open started it (`listPacks`, as
   * openOrInitRepository asks) alongside the fetch of the index files; either may come
   * first. Packs written after the index was listed are adopted from their own headers (a pack
   * indexed meanwhile is then indexed twice, which is harmless), and a pack indexed after the
   * pack listing looks gone, so this run merely does not dedup against it.
   */
  packListing?: Promise<Array<{ id: string; size: number }>>;

  addIndexFile(file: IndexFile): void {
    for (const p of file.packs) {
      this.indexedPacks.set(p.id, p.size);
      const unmarked = this.marked.size > 0 && !this.marked.has(p.id);
      for (const [id, offset, length, rawLength] of p.blobs) this.place(id, { pack: p.id, offset, length, rawLength }, unmarked);
    }
  }

  addPack(id: string, size: number, entries: PackEntry[]): void {
    this.indexedPacks.set(id, size);
    const unmarked = this.marked.size > 0 && !this.marked.has(id);
    for (const e of entries) this.place(e.id, { pack: id, offset: e.offset, length: e.length, rawLength: e.rawLength }, unmarked);
  }

  /** First location seen wins, except that one in a pack no prune has marked wins over one in a marked pack. */
  private place(id: string | Buffer, loc: BlobLocation, unmarked: boolean): void {
    if (this.index.add(id, loc) || !unmarked) return;
    if (this.marked.has(this.index.get(id)!.pack)) this.index.set(id, loc);
  }

  /**
   * Writes index files naming these packs: one, or several when the packs hold more than
   * `maxBlobs` blocks between them (a pack is never split across files). Returns their keys.
   */
  writeIndex(packs: Array<{ id: string; size: number; entries: PackEntry[] }>, maxBlobs = INDEX_FILE_MAX_BLOBS): Promise<string[]> {
    return this.writeIndexPacks(indexFileFor(packs).packs, maxBlobs);
  }

  /** `writeIndex` for packs as index files name them (prune rewrites what it read). */
  async writeIndexPacks(packs: IndexFile['packs'], maxBlobs = INDEX_FILE_MAX_BLOBS): Promise<string[]> {
    const files: Array<IndexFile['packs']> = [];
    let blobs = 0;
    for (const p of packs) {
      const last = files.at(-1);
      if (last && blobs + p.blobs.length <= maxBlobs) {
        last.push(p);
        blobs += p.blobs.length;
      } else {
        files.push([p]);
        blobs = p.blobs.length;
      }
    }
    const keys: string[] = [];
    await mapLimit(files, 8, async (file) => {
      const name = randomBytes(16).toString('hex');
      const key = `index/${name}`;
      const body = Buffer.from(JSON.stringify({ version: 1, packs: file } satisfies IndexFile), 'utf8');
      await this.store.put(key, this.sealObject('index', name, body));
      keys.push(key);
    });
    return keys;
  }

  /** Reads a pack's header straight from the pack (for packs no index names yet). */
  async readPackHeader(packId: string, size: number): Promise<PackEntry[]> {
    const key = packKey(packId);
    if (size < 8) throw new CorruptObjectError(key, `is ${size} bytes: too short to be a pack`);
    const trailer = await this.store.get(key, { offset: size - 8, length: 8 });
    const hlen = headerLengthFromTrailer(trailer);
    if (hlen === undefined || hlen > size - 8) throw new CorruptObjectError(key, 'has no valid pack trailer');
    const sealed = await this.store.get(key, { offset: size - 8 - hlen, length: hlen });
    const entries = parsePackHeader(this.key.encryption, sealed, size - 8 - hlen);
    if (!entries) throw new CorruptObjectError(key, 'header does not authenticate or does not match the pack');
    return entries;
  }

  /**
   * Packs that were uploaded but never indexed (a run killed between pack upload
   * and index write, or another worker still writing): their blocks are indexed
   * from their own headers so this run reuses them instead of uploading again.
   * Returns how many packs were adopted.
   */
  async adoptUnindexedPacks(): Promise<number> {
    const listing = this.packListing ?? listPacks(this.store);
    this.packListing = undefined;
    const orphans: Array<{ id: string; size: number }> = [];
    const present = new Set<string>();
    for (const p of await listing) {
      present.add(p.id);
      if (!this.indexedPacks.has(p.id)) orphans.push(p);
    }
    // Indexed but gone (a prune that stopped half-way): never dedup against them.
    this.avoidPacks([...this.indexedPacks.keys()].filter((p) => !present.has(p)));
    // Packs the load indexed from their headers (an index file was damaged) are written down too:
    // every one, also those uploaded after the listing above (the load listed again).
    const adopted: Array<{ id: string; size: number; entries: PackEntry[] }> = [...this.recovered];
    this.recovered = [];
    await mapLimit(orphans, 8, async (p) => {
      try {
        const entries = await this.readPackHeader(p.id, p.size);
        adopted.push({ ...p, entries });
        this.addPack(p.id, p.size, entries);
      } catch (e) {
        // A pack that cannot be read is not reused (prune removes it once it is old); one that
        // vanished since the listing was an orphan a prune just deleted.
        if (!(e instanceof CorruptObjectError) && !(e instanceof NotFoundError)) throw e;
      }
    });
    if (adopted.length) await this.writeIndex(adopted);
    return adopted.length;
  }

  async writeManifest(m: Manifest): Promise<void> {
    const created = await this.store.putIfAbsent(`snapshots/${m.id}`, this.sealObject('snapshot', m.id, Buffer.from(JSON.stringify(m), 'utf8')));
    if (!created) throw new RepositoryError(`restore point ${m.id} already exists in ${this.location}`);
  }

  async readManifest(id: string): Promise<Manifest> {
    const key = `snapshots/${id}`;
    let sealed: Uint8Array;
    try {
      sealed = await this.store.get(key);
    } catch (e) {
      if (e instanceof NotFoundError) throw new NotFoundError(`no restore point "${id}" in ${this.location} — list them with \`tender-worker ls\``);
      throw e;
    }
    return this.openManifest(key, sealed);
  }

  /** A manifest from its sealed bytes, as stored under `key` (snapshots/<id>). */
  openManifest(key: string, sealed: Uint8Array): Manifest {
    const id = key.slice('snapshots/'.length);
    const m = JSON.parse(this.openObject(key, 'snapshot', id, sealed).toString('utf8')) as Manifest;
    if (m.id !== id) throw new CorruptObjectError(key, `names restore point ${m.id}, not ${id}`);
    return m;
  }

  async listManifestIds(): Promise<string[]> {
    const ids: string[] = [];
    for await (const o of this.store.list('snapshots/')) ids.push(o.key.slice('snapshots/'.length));
    return ids.sort();
  }

  async writeBlockMap(name: string, map: Buffer): Promise<{ key: string; sha256: string }> {
    const key = `maps/${name}`;
    const sealed = this.sealObject('map', name, map);
    await this.store.put(key, sealed);
    return { key, sha256: createHash('sha256').update(sealed).digest('hex') };
  }

  async readBlockMap(ref: { key: string; sha256: string }, blockCount: number): Promise<Buffer> {
    const sealed = await this.getObject(ref.key);
    if (createHash('sha256').update(sealed).digest('hex') !== ref.sha256) throw new CorruptObjectError(ref.key, 'does not match the digest its restore point records');
    const map = this.openObject(ref.key, 'map', ref.key.slice('maps/'.length), sealed);
    if (map.length !== blockCount * 32) throw new CorruptObjectError(ref.key, `holds ${map.length / 32} blocks, expected ${blockCount}`);
    return map;
  }
}

const KEYS_PREFIX = 'keys/';
/**
 * zstd level 2 is zstd's fast strategy (one hash table, no chain table). Its table cut to
 * 2^15 entries (128 KiB) stays in a core's L2 cache, and 5-byte matches catch the short
 * repeats of binaries. On the benchmark disk: 4.6% smaller than level 1 at 15% less speed;
 * level 3 (double-fast, a 512 KiB table) is 3% smaller again at a quarter less or worse
 * (docs/repository-format.md). chainLog would be ignored here: frames are byte-identical
 * with or without it, so repositories that record chainLog 12 compress exactly the same.
 */
export const DEFAULT_COMPRESSION = { codec: 'zstd', level: 2, params: { hashLog: 15, minMatch: 5 } } as const;

export interface InitOptions extends RepositoryOptions {
  blockSize?: number;
  packSize?: number;
  compressionLevel?: number;
  /**
   * Block ID function (default keyed BLAKE3, format 2). `hmac-sha256` makes a format 1
   * repository, as tender-worker wrote before format 2: what tests of older repositories use.
   */
  blockId?: BlockIdFunction;
  /** scrypt cost (tests lower it). */
  scrypt?: { N: number; r: number; p: number };
}

async function readConfig(store: ObjectStore, key: MasterKey): Promise<RepoConfig | undefined> {
  const sealed = await store.get('config');
  const plain = open(key.encryption, sealed, aadFor('config', 'repository'));
  if (!plain) return undefined;
  const cfg = JSON.parse(plain.toString('utf8')) as RepoConfig;
  if (cfg.version > FORMAT_VERSION) throw new RepositoryError(`${store.location} uses repository format ${cfg.version}; this tender-worker reads up to ${FORMAT_VERSION} — upgrade it`);
  if (cfg.blockId !== undefined && !BLOCK_ID_FUNCTIONS.includes(cfg.blockId)) {
    throw new RepositoryError(`${store.location} makes block IDs with ${JSON.stringify(cfg.blockId)}, which this tender-worker does not know — upgrade it`);
  }
  // Format 1 has no blockId (HMAC-SHA-256); format 2 names one. A config that mixes them would
  // have its blocks found under the wrong IDs: refused rather than guessed.
  if ((cfg.version >= 2) !== (cfg.blockId !== undefined)) {
    throw new RepositoryError(`${store.location} has a format ${cfg.version} config ${cfg.blockId === undefined ? 'that names no block ID function' : `that names a block ID function (${cfg.blockId}), which format 1 does not have`}: it was not written by tender-worker — restore config from a copy`);
  }
  return cfg;
}

/** Creates a repository. Safe against a concurrent init: the first config written wins and the other opens it. */
export async function initRepository(store: ObjectStore, secret: RepositorySecret, opts: InitOptions = {}): Promise<Repository> {
  if (await store.stat('config')) throw new RepositoryError(`${store.location} already holds a Tender repository — open it instead of creating one`);
  const now = (opts.now ?? (() => new Date()))();
  // A backup's codec threads start while the new key is wrapped (scrypt, or a KMS call), as an
  // open starts them while the key unwraps.
  const threads = opts.startCodecs ? new CodecThreads(opts.threads) : undefined;
  try {
    const repo = await createRepository(store, secret, opts, now, threads);
    if (repo) return repo;
  } catch (e) {
    await threads?.terminate();
    throw e;
  }
  // Another worker created the repository first: open it (with threads of its own).
  await threads?.terminate();
  return openRepository(store, secret, opts);
}

/** initRepository's work: the new repository, or undefined when another worker's config won the race. */
async function createRepository(store: ObjectStore, secret: RepositorySecret, opts: InitOptions, now: Date, threads: CodecThreads | undefined): Promise<Repository | undefined> {
  const master = newMasterKey();
  const keyName = randomBytes(8).toString('hex');
  const record = await wrapMasterKey(master, secret, now, opts.scrypt);
  await store.put(`${KEYS_PREFIX}${keyName}`, Buffer.from(JSON.stringify(record), 'utf8'));
  const blockId = opts.blockId ?? 'blake3';
  // Format 1 is what HMAC-SHA-256 IDs mean: its config has no blockId (readConfig insists).
  const format1 = blockId === 'hmac-sha256';
  const config: RepoConfig = {
    version: format1 ? 1 : FORMAT_VERSION,
    id: randomBytes(16).toString('hex'),
    blockSize: opts.blockSize ?? DEFAULT_BLOCK_SIZE,
    packSize: opts.packSize ?? DEFAULT_PACK_SIZE,
    compression: opts.compressionLevel === undefined ? { ...DEFAULT_COMPRESSION, params: { ...DEFAULT_COMPRESSION.params } } : { codec: 'zstd', level: opts.compressionLevel },
    ...(format1 ? {} : { blockId }),
    created: now.toISOString(),
  };
  const created = await store.putIfAbsent('config', seal(master.encryption, Buffer.from(JSON.stringify(config)), aadFor('config', 'repository')));
  if (!created) {
    // Another worker created the repository first. Our key record wraps a master key nothing
    // uses: remove it if we may (a worker role that cannot delete leaves it; open skips it).
    await store.delete(`${KEYS_PREFIX}${keyName}`).catch((e) => {
      if (!(e instanceof AccessDeniedError)) throw e;
    });
    return undefined;
  }
  const repo = new Repository(store, master, config, opts, new Map(), threads);
  // Threads started early get their keys and settings now, as after an open.
  if (threads) repo.codecs();
  return repo;
}

/** Opens a repository with a passphrase or a cloud key: NotFoundError when there is none, WrongPassphraseError when no key record opens. */
export async function openRepository(store: ObjectStore, secret: RepositorySecret, opts: RepositoryOptions = {}): Promise<Repository> {
  if (!(await store.stat('config'))) {
    throw new NotFoundError(`no Tender repository at ${store.location} — check the URL, or create one with \`tender-worker init\` (backup creates it on first use)`);
  }
  // The key records are read first: unwrapping one (scrypt, or a KMS call) is what the open
  // waits for, and the reads started below, queued ahead of these on the I/O threads, would only
  // delay its start (by 5–20 ms here).
  const records = await readKeyRecords(store);
  // What every open reads next does not need the key to be fetched: fetch it while the key
  // unwraps. Nothing fetched is used before the key has opened the config.
  const listing = opts.listPacks ? listPacks(store) : undefined;
  listing?.catch(() => undefined); // a failed open never looks at it
  const prefetched = new Map<string, Promise<StoredObject[]>>();
  for (const prefix of new Set(['index/', 'deletions/', ...(opts.prefetch ?? [])])) {
    const p = fetchObjectsUnder(store, prefix);
    p.catch(() => undefined); // a failed open never looks at it; a failed fetch surfaces when read
    prefetched.set(prefix, p);
  }
  const threads = opts.startCodecs ? new CodecThreads(opts.threads) : undefined;
  try {
    const repo = await openWithKey(store, secret, opts, prefetched, threads, records);
    repo.packListing = listing;
    return repo;
  } catch (e) {
    await threads?.terminate();
    throw e;
  }
}

/**
 * Every key record, in key order: a record removed meanwhile, or not JSON, is skipped; one that
 * cannot be read (access denied, say) comes back as its error, which the open reports only if no
 * other record opens the repository.
 */
async function readKeyRecords(store: ObjectStore): Promise<Array<KeyRecord | Error>> {
  const keyKeys: string[] = [];
  for await (const o of store.list(KEYS_PREFIX)) keyKeys.push(o.key);
  if (keyKeys.length === 0) throw new RepositoryError(`${store.location} has a config but no keys/: the repository is damaged; restore the keys/ folder from a copy`);
  const records = await Promise.all(
    keyKeys.sort().map(async (k) => {
      try {
        return JSON.parse(Buffer.from(await store.get(k)).toString('utf8')) as KeyRecord;
      } catch (e) {
        if (e instanceof NotFoundError || e instanceof SyntaxError) return undefined;
        return toError(e);
      }
    }),
  );
  return records.filter((r): r is KeyRecord | Error => r !== undefined);
}

async function openWithKey(store: ObjectStore, secret: RepositorySecret, opts: RepositoryOptions, prefetched: Map<string, Promise<StoredObject[]>>, threads: CodecThreads | undefined, records: Array<KeyRecord | Error>): Promise<Repository> {
  let unreadable: Error | undefined;
  for (const rec of records) {
    if (rec instanceof Error) {
      unreadable ??= rec;
      continue;
    }
    const unwrapping = unwrapMasterKey(rec, secret);
    // The main thread only waits while the key unwraps: the zstd binding, which every object
    // read next needs, loads meanwhile. Where it cannot load, the first object read says so.
    try {
      loadZstd();
    } catch {
      // reported by that read
    }
    const master = await unwrapping;
    if (!master) continue;
    const config = await readConfig(store, master);
    if (!config) continue; // a key left by an init that lost the race
    const repo = new Repository(store, master, config, opts, prefetched, threads);
    if (threads) repo.codecs();
    try {
      await repo.loadIndex();
    } catch (e) {
      await repo.close();
      throw e;
    }
    return repo;
  }
  // A key record we could not read may be the one that opens: its error says more than "wrong key".
  if (unreadable) throw unreadable;
  if (typeof secret === 'string') {
    throw new WrongPassphraseError(`the passphrase does not open the repository at ${store.location} — check the passphrase you gave (TENDER_PASSPHRASE / --passphrase-file, or the policy's repository.key)`);
  }
  throw new WrongPassphraseError(`${describeSecret(secret)} does not open the repository at ${store.location}: no key record was wrapped with it — open it with a key it was made with, or add this key with \`tender-worker key add\``);
}

/** Every pack in the store, with its size. */
async function listPacks(store: ObjectStore): Promise<Array<{ id: string; size: number }>> {
  const out: Array<{ id: string; size: number }> = [];
  for await (const o of store.list('data/')) {
    const id = packIdFromKey(o.key);
    if (id) out.push({ id, size: o.size });
  }
  return out;
}

export interface BackupOpenOptions extends InitOptions {
  /** The backup looks for parent restore points: they are fetched while the key unwraps too. */
  incremental?: boolean;
}

/** Opens the repository a backup writes to, creating it on first use. */
export async function openOrInitRepository(store: ObjectStore, secret: RepositorySecret, opts: BackupOpenOptions = {}): Promise<Repository> {
  if (!(await store.stat('config'))) return initRepository(store, secret, { ...opts, startCodecs: true });
  // The backup's first step lists the packs; doing it while the key is unwrapped (scrypt, or a
  // KMS call) takes it off the critical path. Its next reads — deletion marks, and the restore
  // points when it looks for a parent — are fetched meanwhile too, and its codec threads start then.
  return openRepository(store, secret, { ...opts, startCodecs: true, listPacks: true, prefetch: ['deletions/', ...(opts.incremental ? ['snapshots/'] : []), ...(opts.prefetch ?? [])] });
}

/** Adds another way to open the repository (a second passphrase, a KMS key); the data is untouched. */
export async function addKey(repo: Repository, secret: RepositorySecret, opts: { scrypt?: { N: number; r: number; p: number } } = {}): Promise<string> {
  const name = randomBytes(8).toString('hex');
  const record = await wrapMasterKey(repo.key, secret, repo.now(), opts.scrypt);
  await repo.store.put(`${KEYS_PREFIX}${name}`, Buffer.from(JSON.stringify(record), 'utf8'));
  return `${KEYS_PREFIX}${name}`;
}

/** Runs fn over items with at most `limit` at once; the first failure rejects (after in-flight calls settle). */
export function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let i = 0;
  return eachLimit(items, limit, (item) => fn(item, i++));
}

/**
 * Runs fn on the items at most `limit` at a time, taking each from the iterable only when a runner
 * is free (a lazy plan is never made whole). The first failure stops new work and is thrown.
 */
export async function eachLimit<T>(items: Iterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const it = items[Symbol.iterator]();
  let failed: unknown;
  let done = false;
  const runners = Array.from({ length: Math.max(1, limit) }, async () => {
    while (failed === undefined && !done) {
      let r: IteratorResult<T>;
      try {
        r = it.next();
      } catch (e) {
        failed ??= e;
        return;
      }
      if (r.done) {
        done = true;
        return;
      }
      try {
        await fn(r.value);
      } catch (e) {
        failed ??= e;
      }
    }
  });
  await Promise.all(runners);
  if (failed !== undefined) throw failed;
}
