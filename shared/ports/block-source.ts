// Where the data mover reads a disk from, and writes one back to on restore.
// Implementations: raw image file (local), EBS direct APIs (AWS), managed-disk
// snapshot through a SAS URL (Azure).

export interface BlockRange {
  /** Index of the first block (offset / blockSize). */
  start: number;
  /** Number of blocks. */
  count: number;
}

export interface ChangedBlocks {
  /**
   * Blocks that differ from the parent (written or cleared). A block listed here
   * that reads as all zeros is a cleared block.
   */
  blocks: number[];
  /**
   * False when the source could not compute a diff against this parent (e.g. EBS
   * "snapshots are not related") and `blocks` lists every allocated block instead:
   * the caller must say so in its result, never fall back silently.
   */
  incremental: boolean;
  /** Why the diff was not possible, when incremental is false. */
  reason?: string;
}

export interface BlockSource {
  /** Size of the disk in bytes. */
  readonly size: number;
  /** Size of one block in bytes (512 KiB on EBS). The last block may be short. */
  readonly blockSize: number;
  /**
   * Indices of blocks that may hold data, ascending. Blocks not listed read as
   * zeros (holes, never-written EBS blocks, unallocated page ranges).
   */
  allocatedBlocks(): Promise<number[]>;
  /**
   * Blocks changed since `parent` (a source-specific reference: a snapshot id,
   * a snapshot URL, a digest map path).
   */
  changedBlocks(parent: string): Promise<ChangedBlocks>;
  /** Reads one whole block (short only for the last block of the disk). */
  readBlock(index: number): Promise<Uint8Array>;
  /**
   * Optional: reads the block into `target` (at least blockSize long) and returns
   * its length, so the data mover can read into its fixed buffers without a copy.
   */
  readBlockInto?(index: number, target: Uint8Array): Promise<number>;
  close(): Promise<void>;
}

export interface BlockSink {
  readonly blockSize: number;
  /**
   * True when blocks never written read as something other than zeros (a new EBS
   * snapshot on top of a parent): the caller must then write zero blocks too.
   */
  readonly hasBase?: boolean;
  /**
   * Writes one block. Blocks that are not written read back as zeros. The sink
   * must not keep a reference to `data` once the returned promise settles: the
   * caller reuses that memory (copy it if the upload continues in the background).
   */
  writeBlock(index: number, data: Uint8Array): Promise<void>;
  /**
   * Makes the written disk durable and returns a reference to it (path, new
   * snapshot id, disk id). After finish the sink is unusable.
   */
  finish(): Promise<string>;
  /** Abandons the write and removes what was made (a half-written snapshot, a partial file). */
  abort(): Promise<void>;
}
