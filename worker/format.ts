// Byte layouts of the repository, version 2 (docs/repository-format.md).
// Pure functions: building and parsing packs, indexes and block maps does no I/O.

import { randomBytes } from 'node:crypto';
import { aadFor, open, seal } from './crypto.js';

export const FORMAT_VERSION = 2;

/**
 * How a block's ID is computed from its bytes, keyed with the master key's ID half: format 2
 * repositories record `blake3` (keyed BLAKE3-256) in their config; format 1 ones record nothing
 * and use HMAC-SHA-256. The same bytes get different IDs under each, so a repository keeps the
 * function it was made with.
 */
export type BlockIdFunction = 'hmac-sha256' | 'blake3';
export const BLOCK_ID_FUNCTIONS: readonly BlockIdFunction[] = ['hmac-sha256', 'blake3'];
export const DEFAULT_BLOCK_SIZE = 512 * 1024;
export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
const PACK_MAGIC = Buffer.from('TPK1', 'ascii');
/** One header entry: block ID (32), offset (u32), sealed length (u32), raw length (u32). */
const ENTRY = 44;
export const ZERO_ID = Buffer.alloc(32);

export interface PackEntry {
  id: Buffer;
  offset: number;
  length: number;
  rawLength: number;
}

export interface BuiltPack {
  /** The pack's name: 32 random bytes, hex. */
  id: string;
  bytes: Buffer;
  entries: PackEntry[];
}

export function packKey(packId: string): string {
  return `data/${packId.slice(0, 2)}/${packId}`;
}

export function packIdFromKey(key: string): string | undefined {
  const m = /^data\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(key);
  return m?.[1];
}

/** Most blobs in one pack: bounds the header (44 bytes each) when blocks compress to almost nothing. */
export const MAX_PACK_ENTRIES = 4096;

/** Bytes a pack buffer needs: the target size, one more blob, the header and the trailer. */
export function packCapacity(packSize: number, maxBlob: number): number {
  return packSize + maxBlob + 4 + MAX_PACK_ENTRIES * ENTRY + 64 + 8;
}

/**
 * Collects sealed blobs into one pack: [blob…][sealed header][u32 header length][magic "TPK1"].
 * The header is sealed so a pack alone says nothing about which blocks it holds. Writes into a
 * buffer it is given (see packCapacity) and does no I/O; after finish() it is spent.
 */
export class PackBuilder {
  private entries: PackEntry[] = [];
  private offset = 0;
  private spent = false;

  constructor(
    private readonly encKey: Buffer,
    private readonly buf: Buffer,
    private readonly packSize: number,
  ) {}

  get bytes(): number {
    return this.offset;
  }

  get count(): number {
    return this.entries.length;
  }

  get full(): boolean {
    return this.offset >= this.packSize || this.entries.length >= MAX_PACK_ENTRIES;
  }

  add(id: Buffer, sealed: Uint8Array, rawLength: number): void {
    if (this.spent) throw new Error('pack builder used after finish');
    if (this.offset + sealed.length + 4 + (this.entries.length + 1) * ENTRY + 64 + 8 > this.buf.length) throw new Error('pack buffer too small');
    this.buf.set(sealed, this.offset);
    this.entries.push({ id: Buffer.from(id), offset: this.offset, length: sealed.length, rawLength });
    this.offset += sealed.length;
  }

  /** Seals the header; the returned bytes are a view of the builder's buffer. */
  finish(): BuiltPack {
    this.spent = true;
    const header = Buffer.alloc(4 + this.entries.length * ENTRY);
    header.writeUInt32LE(this.entries.length, 0);
    this.entries.forEach((e, i) => {
      const at = 4 + i * ENTRY;
      e.id.copy(header, at);
      header.writeUInt32LE(e.offset, at + 32);
      header.writeUInt32LE(e.length, at + 36);
      header.writeUInt32LE(e.rawLength, at + 40);
    });
    const sealedHeader = seal(this.encKey, header, aadFor('pack-header', ''));
    let at = this.offset;
    at += sealedHeader.copy(this.buf, at);
    at = this.buf.writeUInt32LE(sealedHeader.length, at);
    at += PACK_MAGIC.copy(this.buf, at);
    const bytes = this.buf.subarray(0, at);
    // A random name, not a content hash: hashing every pack cost a fifth of a core, and nothing
    // needs it — each blob and the header are authenticated by AES-GCM on their own.
    return { id: randomBytes(32).toString('hex'), bytes, entries: this.entries };
  }
}

/** Length of the sealed header, read from a pack's last 8 bytes; undefined when they are not a pack trailer. */
export function headerLengthFromTrailer(trailer: Uint8Array): number | undefined {
  const t = Buffer.from(trailer.buffer, trailer.byteOffset, trailer.byteLength);
  if (t.length !== 8 || !t.subarray(4).equals(PACK_MAGIC)) return undefined;
  return t.readUInt32LE(0);
}

/** Decodes a sealed pack header; undefined when it does not authenticate or is malformed. */
export function parsePackHeader(encKey: Buffer, sealedHeader: Uint8Array, packBodyLength: number): PackEntry[] | undefined {
  const header = open(encKey, sealedHeader, aadFor('pack-header', ''));
  if (!header || header.length < 4) return undefined;
  const n = header.readUInt32LE(0);
  if (header.length !== 4 + n * ENTRY) return undefined;
  const out: PackEntry[] = [];
  let expected = 0;
  for (let i = 0; i < n; i++) {
    const at = 4 + i * ENTRY;
    const e = {
      id: Buffer.from(header.subarray(at, at + 32)),
      offset: header.readUInt32LE(at + 32),
      length: header.readUInt32LE(at + 36),
      rawLength: header.readUInt32LE(at + 40),
    };
    if (e.offset !== expected) return undefined;
    expected += e.length;
    out.push(e);
  }
  if (expected !== packBodyLength) return undefined;
  return out;
}

/** Checks a built pack before it is uploaded: its header must parse back to exactly what was added. */
export function checkBuiltPack(encKey: Buffer, pack: BuiltPack): string | undefined {
  const b = pack.bytes;
  const hlen = headerLengthFromTrailer(b.subarray(b.length - 8));
  if (hlen === undefined) return 'trailer is missing';
  const body = b.length - 8 - hlen;
  const entries = parsePackHeader(encKey, b.subarray(body, b.length - 8), body);
  if (!entries || entries.length !== pack.entries.length) return 'header does not decode';
  for (let i = 0; i < entries.length; i++) {
    const a = entries[i]!;
    const e = pack.entries[i]!;
    if (!a.id.equals(e.id) || a.offset !== e.offset || a.length !== e.length || a.rawLength !== e.rawLength) return `entry ${i} differs`;
  }
  return undefined;
}

/** Where a block lives. */
export interface BlobLocation {
  pack: string;
  offset: number;
  length: number;
  rawLength: number;
}

/** Plaintext of an `index/<id>` object (before compression and sealing). */
export interface IndexFile {
  version: 1;
  packs: Array<{ id: string; size: number; blobs: Array<[id: string, offset: number, length: number, rawLength: number]> }>;
}

export function indexFileFor(packs: Array<{ id: string; size: number; entries: PackEntry[] }>): IndexFile {
  return {
    version: 1,
    packs: packs.map((p) => ({ id: p.id, size: p.size, blobs: p.entries.map((e) => [e.id.toString('hex'), e.offset, e.length, e.rawLength]) })),
  };
}

/** A disk's block map: blockCount × 32-byte IDs; ZERO_ID marks a block that reads as zeros. */
export function emptyBlockMap(blockCount: number): Buffer {
  return Buffer.alloc(blockCount * 32);
}

export function blockCount(sizeBytes: number, blockSize: number): number {
  return Math.ceil(sizeBytes / blockSize);
}

export function mapGet(map: Buffer, i: number): Buffer {
  return map.subarray(i * 32, i * 32 + 32);
}

export function mapSet(map: Buffer, i: number, id: Buffer): void {
  id.copy(map, i * 32);
}

export function isZeroId(id: Buffer): boolean {
  return id.equals(ZERO_ID);
}

/** Restore point manifest: the plaintext JSON of `snapshots/<id>`. */
export interface Manifest {
  version: 1;
  id: string;
  time: string;
  vm: { vmId: string; name: string; tags: Record<string, string> };
  policy: string;
  runId: string;
  snapshotSetId: string;
  parentId?: string;
  tags: Record<string, string>;
  disks: ManifestDisk[];
}

export interface ManifestDisk {
  diskId: string;
  device?: string;
  sizeBytes: number;
  blockSize: number;
  /** The source snapshot this disk was read from (EBS snapshot id, Azure snapshot, local snapshot path). */
  snapshotRef?: string;
  /** `maps/<…>` object holding the sealed block map, and the SHA-256 of its sealed bytes. */
  map: { key: string; sha256: string };
  /** Blocks that hold data (not zeros). */
  dataBlocks: number;
  incremental: boolean;
  reason?: string;
}
