// Which blocks are surely new: a Bloom filter of the block IDs a backup already knows (the
// repository's index, and the blocks this run has sealed), in memory the codec threads share.
//
// A codec thread that has just hashed a block asks it. "Surely new" (no bit set) lets the
// thread compress and seal the block at once and answer both in one message, instead of
// answering with the ID and waiting for the main thread to ask for the compression: one round
// trip between threads less per new block, about 5% of a full backup's CPU here. "Maybe known"
// leaves the decision to the main thread, as before, so ten VMs cloned from one image still
// cost ten hashes per block and one compression. The filter decides nothing about what is
// stored: the main thread checks every block against the index itself, and a block a thread
// sealed for nothing (a duplicate still in flight, say) is dropped. A thread does not seal at
// once a block it has itself just sealed: a run of identical blocks is compressed once per
// thread at most, not once per block in flight.
//
// Block IDs are keyed hashes, uniform and not choosable without the repository key, so the
// filter's four bit positions are simply four 32-bit words of the ID. 10 bits per ID (rounded
// up to a power of two: 1.25–2.5 bytes): about 1% of new blocks look known and go the long way.
// Bits are set by the main thread alone; a thread reading a word while it is set sees the old
// or the new value, and either answer is safe.

const BITS_PER_ID = 10;
const MIN_BITS = 2 ** 16;
/** 32 MiB: past about 27 million expected IDs the filter only grows less exact (more round trips), never wrong. */
const MAX_BITS = 2 ** 28;

export class IdFilter {
  readonly bits: number;
  readonly memory: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly mask: number;
  private readonly probe = new Uint32Array(4);
  private readonly probeBytes = new Uint8Array(this.probe.buffer);

  constructor(expectedIds: number) {
    const want = Math.max(MIN_BITS, Math.min(MAX_BITS, expectedIds * BITS_PER_ID));
    this.bits = 2 ** Math.ceil(Math.log2(want));
    this.mask = this.bits - 1;
    this.memory = new SharedArrayBuffer(this.bits / 8);
    this.words = new Int32Array(this.memory);
  }

  /** Adds a 32-byte block ID. */
  add(id: Uint8Array): void {
    this.probeBytes.set(id.subarray(4, 20));
    this.setProbe();
  }

  /** Adds the ID held in words[at, at + 8) (as BlockIndex stores them). */
  addWords(words: Uint32Array, at: number): void {
    const p = this.probe;
    p[0] = words[at + 1]!;
    p[1] = words[at + 2]!;
    p[2] = words[at + 3]!;
    p[3] = words[at + 4]!;
    this.setProbe();
  }

  /** False when the ID was surely never added. */
  mayHave(id: Uint8Array): boolean {
    return filterMayHave(this.words, this.mask, id, this.probe, this.probeBytes);
  }

  private setProbe(): void {
    for (let i = 0; i < 4; i++) {
      const b = this.probe[i]! & this.mask;
      this.words[b >>> 5] |= 1 << (b & 31);
    }
  }
}

/**
 * Is it worth building a filter for this run? Filling it visits every block the index knows
 * (a few tens of nanoseconds each) and saves a round trip (about a tenth of a millisecond) per
 * block read: a run that reads fewer blocks than 1/2000 of the index would spend more than it
 * saves, and goes without (every block then takes the long way, as before the filter).
 */
export function filterPays(indexSize: number, blocksToRead: number): boolean {
  return blocksToRead * 2000 >= indexSize;
}

/**
 * The filter's test, written once: IdFilter.mayHave calls it, and the codec threads run its
 * source (ID_FILTER_THREAD_SOURCE), so it uses nothing but its arguments. `probe` is four words
 * of scratch and `probeBytes` its bytes: the ID's words 1–4, in the machine's byte order, as
 * BlockIndex holds them.
 */
function filterMayHave(words: Int32Array, mask: number, id: Uint8Array, probe: Uint32Array, probeBytes: Uint8Array): boolean {
  probeBytes.set(id.subarray(4, 20));
  for (let i = 0; i < 4; i++) {
    const b = probe[i]! & mask;
    if ((words[b >>> 5]! & (1 << (b & 31))) === 0) return false;
  }
  return true;
}

/** The codec threads' side of the filter, as JavaScript source for their thread body (codec-pool.ts). */
export const ID_FILTER_THREAD_SOURCE = `
const filterMayHave = (${filterMayHave.toString()});
const filterProbe = new Uint32Array(4), filterProbeBytes = new Uint8Array(filterProbe.buffer);
` + String.raw`
// The blocks this thread sealed at once lately (hex IDs, oldest first): one of them read again
// is left to the main thread, which knows it is pending.
const recentlySealed = new Set();
function noteSealed(hex) {
  recentlySealed.add(hex);
  if (recentlySealed.size > 64) recentlySealed.delete(recentlySealed.values().next().value);
}
`;
