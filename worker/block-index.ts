// The dedup index held in memory: block ID → where the block is stored.
//
// A repository's every distinct block is one entry, so this is what a worker's memory grows
// with. A Map of hex strings to objects costs about 166 bytes an entry and holds at most 2^24
// entries (8 TiB of distinct 512 KiB blocks); here an entry is 48 bytes in fixed-size chunks of
// typed memory outside V8's heap, plus 4 to 8 bytes of hash table: about 55 bytes an entry,
// 110 MiB per TiB of distinct 512 KiB blocks, and no garbage collector walking it.
//
// Entry layout, 12 32-bit words: the 32-byte block ID, the pack (a number into `packs`), the
// blob's offset in the pack, its sealed length and its raw length. Block IDs are keyed hashes
// (uniform, and not choosable by anyone without the repository key), so the table is indexed by
// the ID's first word. Open addressing, linear probing; deleting marks the entry, because
// deletes are rare (packs a prune marked, once per run).

import { RepositoryError } from '../shared/core/errors.js';
import type { BlobLocation } from './format.js';

const WORDS = 12;
const CHUNK_BITS = 16;
const CHUNK = 1 << CHUNK_BITS;
const DELETED = 0xffffffff;
/** Entries one index holds at most (2^30 − 1: 512 PiB of distinct 512 KiB blocks); memory runs out long before. */
export const BLOCK_INDEX_MAX_ENTRIES = 2 ** 30 - 1;
const TOO_MANY = 'split the estate over several repositories, or give the worker more memory';

export class BlockIndex implements Iterable<[string, BlobLocation]> {
  private chunks: Array<Uint32Array<ArrayBuffer>> = [];
  /** Entry number + 1 per slot; 0 is empty. */
  private table = new Uint32Array(1024);
  private used = 0;
  private live = 0;
  private readonly packs: string[] = [];
  private readonly packNumbers = new Map<string, number>();
  private readonly scratch = Buffer.alloc(32);
  private readonly scratchWords = new Uint32Array(this.scratch.buffer, this.scratch.byteOffset, 8);

  /** Distinct blocks the index knows where to find. */
  get size(): number {
    return this.live;
  }

  clear(): void {
    this.chunks = [];
    this.table = new Uint32Array(1024);
    this.used = 0;
    this.live = 0;
    this.packs.length = 0;
    this.packNumbers.clear();
  }

  has(id: string | Uint8Array): boolean {
    const e = this.find(id);
    return e >= 0 && this.word(e, 8) !== DELETED;
  }

  get(id: string | Uint8Array): BlobLocation | undefined {
    const e = this.find(id);
    if (e < 0) return undefined;
    return this.location(e);
  }

  /**
   * Where a block is, without making an object: writes [pack number, offset, sealed length, raw
   * length] into `out` and returns true, or returns false. `packName` turns the number back.
   */
  lookup(id: string | Uint8Array, out: Uint32Array): boolean {
    const e = this.find(id);
    if (e < 0 || this.word(e, 8) === DELETED) return false;
    const chunk = this.chunks[e >>> CHUNK_BITS]!;
    const at = (e & (CHUNK - 1)) * WORDS;
    out[0] = chunk[at + 8]!;
    out[1] = chunk[at + 9]!;
    out[2] = chunk[at + 10]!;
    out[3] = chunk[at + 11]!;
    return true;
  }

  /** Packs the index has numbered (`lookup`'s pack numbers are below this). */
  get packCount(): number {
    return this.packs.length;
  }

  /** Blocks the index places in each pack, by pack number. */
  countsByPack(): Uint32Array {
    const counts = new Uint32Array(this.packs.length);
    for (let e = 0; e < this.used; e++) {
      const pack = this.word(e, 8);
      if (pack !== DELETED) counts[pack]!++;
    }
    return counts;
  }

  packNumber(name: string): number | undefined {
    return this.packNumbers.get(name);
  }

  packName(n: number): string {
    const name = this.packs[n];
    if (name === undefined) throw new RangeError(`no pack number ${n}`);
    return name;
  }

  /** Records where a block is; a block already present keeps its first location (`set` to move it). */
  add(id: string | Uint8Array, loc: BlobLocation): boolean {
    const e = this.find(id);
    if (e >= 0 && this.word(e, 8) !== DELETED) return false;
    this.put(e, loc);
    return true;
  }

  /** Records where a block is, replacing any location it had. */
  set(id: string | Uint8Array, loc: BlobLocation): this {
    this.put(this.find(id), loc);
    return this;
  }

  delete(id: string | Uint8Array): boolean {
    const e = this.find(id);
    if (e < 0 || this.word(e, 8) === DELETED) return false;
    this.setWord(e, 8, DELETED);
    this.live--;
    return true;
  }

  /** Forgets every block stored in one of these packs. */
  deletePacks(packs: Set<string>): number {
    const numbers = new Set<number>();
    for (const p of packs) {
      const n = this.packNumbers.get(p);
      if (n !== undefined) numbers.add(n);
    }
    if (!numbers.size) return 0;
    let removed = 0;
    for (let e = 0; e < this.used; e++) {
      const pack = this.word(e, 8);
      if (pack !== DELETED && numbers.has(pack)) {
        this.setWord(e, 8, DELETED);
        removed++;
      }
    }
    this.live -= removed;
    return removed;
  }

  *[Symbol.iterator](): IterableIterator<[string, BlobLocation]> {
    for (let e = 0; e < this.used; e++) {
      if (this.word(e, 8) === DELETED) continue;
      const chunk = this.chunks[e >>> CHUNK_BITS]!;
      const at = (e & (CHUNK - 1)) * WORDS * 4;
      yield [Buffer.from(chunk.buffer, chunk.byteOffset + at, 32).toString('hex'), this.location(e)!];
    }
  }

  /** Calls `fn` with each live entry's ID as the 8 words words[at, at + 8), without making a Buffer or string of it. */
  forEachIdWords(fn: (words: Uint32Array, at: number) => void): void {
    for (let e = 0; e < this.used; e++) {
      const chunk = this.chunks[e >>> CHUNK_BITS]!;
      const at = (e & (CHUNK - 1)) * WORDS;
      if (chunk[at + 8] !== DELETED) fn(chunk, at);
    }
  }

  *keys(): IterableIterator<string> {
    for (const [hex] of this) yield hex;
  }

  /** Loads the ID into the scratch words; false when it is not a 32-byte ID. */
  private load(id: string | Uint8Array): boolean {
    if (typeof id === 'string') {
      if (id.length !== 64) return false;
      return this.scratch.write(id, 0, 'hex') === 32;
    }
    if (id.length !== 32) return false;
    this.scratch.set(id);
    return true;
  }

  /**
   * The entry holding this ID, or -(slot + 1) for the empty slot where it would go. An entry
   * marked deleted is still found: setting the ID again revives it in place.
   */
  private find(id: string | Uint8Array): number {
    if (!this.load(id)) throw new TypeError(`not a block ID: ${typeof id === 'string' ? JSON.stringify(id.slice(0, 80)) : `${id.length} bytes`}`);
    return this.probe();
  }

  /** `find` for the ID already in the scratch words. */
  private probe(): number {
    const w = this.scratchWords;
    const mask = this.table.length - 1;
    for (let slot = w[0]! & mask; ; slot = (slot + 1) & mask) {
      const v = this.table[slot]!;
      if (v === 0) return -(slot + 1);
      const e = v - 1;
      const chunk = this.chunks[e >>> CHUNK_BITS]!;
      const at = (e & (CHUNK - 1)) * WORDS;
      if (chunk[at] === w[0] && chunk[at + 1] === w[1] && chunk[at + 2] === w[2] && chunk[at + 3] === w[3] && chunk[at + 4] === w[4] && chunk[at + 5] === w[5] && chunk[at + 6] === w[6] && chunk[at + 7] === w[7]) return e;
    }
  }

  /** Writes a location into entry `found` (or a new entry, when `find` returned a free slot); the ID is in scratch. */
  private put(found: number, loc: BlobLocation): void {
    if (!fits(loc.offset) || !fits(loc.length) || !fits(loc.rawLength)) {
      throw new RepositoryError(`pack ${loc.pack} places a block at offset ${loc.offset}, length ${loc.length} (raw ${loc.rawLength}), which this Tender cannot address (written by a newer version? upgrade tender-worker)`);
    }
    let pack = this.packNumbers.get(loc.pack);
    if (pack === undefined) {
      pack = this.packs.length;
      this.packs.push(loc.pack);
      this.packNumbers.set(loc.pack, pack);
    }
    let e: number;
    if (found >= 0) {
      e = found;
      if (this.word(e, 8) === DELETED) this.live++;
    } else {
      if (this.used >= BLOCK_INDEX_MAX_ENTRIES) {
        throw new RepositoryError(`the repository names more than ${BLOCK_INDEX_MAX_ENTRIES} distinct blocks, more than one worker's index holds — ${TOO_MANY}`);
      }
      // Only after a failed growth can the table come near full; its free slots are what end
      // every probe, so it grows (or fails, linking nothing) before the last one is taken.
      if (this.used + 2 > this.table.length) {
        this.grow();
        found = this.probe();
      }
      if (this.used >>> CHUNK_BITS >= this.chunks.length) this.chunks.push(allocate(CHUNK * WORDS, this.live));
      e = this.used++;
      const chunk = this.chunks[e >>> CHUNK_BITS]!;
      chunk.set(this.scratchWords, (e & (CHUNK - 1)) * WORDS);
      this.writeLocation(e, pack, loc);
      // Linked only once complete: a growth that fails below leaves a valid (if fuller) table.
      this.table[-found - 1] = e + 1;
      this.live++;
      // At most 3/4 full, so probes stay short; growing rehashes every entry (IDs are in the entries).
      if (this.used * 4 > this.table.length * 3) this.grow();
      return;
    }
    this.writeLocation(e, pack, loc);
  }

  private writeLocation(e: number, pack: number, loc: BlobLocation): void {
    this.setWord(e, 8, pack);
    this.setWord(e, 9, loc.offset);
    this.setWord(e, 10, loc.length);
    this.setWord(e, 11, loc.rawLength);
  }

  private grow(): void {
    const table = allocate(this.table.length * 2, this.live);
    const mask = table.length - 1;
    for (let e = 0; e < this.used; e++) {
      let slot = this.word(e, 0) & mask;
      while (table[slot] !== 0) slot = (slot + 1) & mask;
      table[slot] = e + 1;
    }
    this.table = table;
  }

  private location(e: number): BlobLocation | undefined {
    const pack = this.word(e, 8);
    if (pack === DELETED) return undefined;
    return { pack: this.packs[pack]!, offset: this.word(e, 9), length: this.word(e, 10), rawLength: this.word(e, 11) };
  }

  private word(e: number, k: number): number {
    return this.chunks[e >>> CHUNK_BITS]![(e & (CHUNK - 1)) * WORDS + k]!;
  }

  private setWord(e: number, k: number, v: number): void {
    this.chunks[e >>> CHUNK_BITS]![(e & (CHUNK - 1)) * WORDS + k] = v;
  }
}

/** A size or offset an entry can hold. */
function fits(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v < DELETED;
}

/** Zeroed memory for the index, or an error that says what ran out. */
function allocate(words: number, entries: number): Uint32Array<ArrayBuffer> {
  try {
    return new Uint32Array(words);
  } catch (e) {
    throw new RepositoryError(`out of memory for the dedup index at ${entries} distinct blocks (${((words * 4) / 2 ** 20).toFixed(1)} MiB more needed) — ${TOO_MANY}`, { cause: e });
  }
}
