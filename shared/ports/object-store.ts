// The one storage interface every repository backend implements (local folder,
// S3, Azure Blob). Retry, throttling, logging and fault injection are wrappers
// around an ObjectStore, never code inside one. One shared contract suite
// (test/stores/contract.ts) holds every implementation to what is written here.

export interface ObjectInfo {
  key: string;
  size: number;
  /** Last modification time as the store reports it. */
  modified: Date;
}

export interface GetRange {
  /** First byte, inclusive. */
  offset: number;
  /** Number of bytes; the result may be shorter only at the end of the object. */
  length: number;
}

/** An open object (ObjectStore.openReader): positional reads into buffers the caller owns. */
export interface ObjectReader {
  /**
   * Reads from byte `offset` into `target`, as much as fits, and returns how many bytes it
   * read: fewer than `target.length` only at the end of the object, 0 at or past it.
   */
  read(offset: number, target: Uint8Array): Promise<number>;
  /** Ends the reader; every reader must be closed. */
  close(): Promise<void>;
}

export interface ObjectStore {
  /** A human-readable location, without credentials (for messages and logs). */
  readonly location: string;

  /**
   * Stores `data` under `key`, replacing any object there. Idempotent: putting
   * the same bytes twice leaves one object. A reader never sees a partial
   * object: the object appears whole or not at all.
   */
  put(key: string, data: Uint8Array): Promise<void>;

  /**
   * Stores `data` under `key` only if no object exists there. Returns true when
   * this call created it, false when an object already existed (its content is
   * left untouched). Used for locks and for write-once records.
   */
  putIfAbsent(key: string, data: Uint8Array): Promise<boolean>;

  /**
   * Reads the object, or the range of it. Throws NotFoundError (shared/core/errors)
   * when the key does not exist. A range past the end returns the bytes there are.
   */
  get(key: string, range?: GetRange): Promise<Uint8Array>;

  /**
   * Optional. Opens the object for reads straight into the caller's buffers (ObjectReader);
   * throws NotFoundError as `get` does. Only a store where many small reads of one object
   * cost little (a local folder) has it: a caller with many small reads to make uses it when
   * it is there, and a few coalesced ranged gets otherwise. The reader sees the object as it
   * was when opened, whatever a put does meanwhile.
   */
  openReader?(key: string): Promise<ObjectReader>;

  /** Size and time of the object, or undefined when it does not exist. */
  stat(key: string): Promise<ObjectInfo | undefined>;

  /**
   * Every object whose key starts with `prefix`, in no guaranteed order.
   * Lists what existed when the listing began; objects written meanwhile may or
   * may not appear.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;

  /** Removes the object. Idempotent: deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
}
