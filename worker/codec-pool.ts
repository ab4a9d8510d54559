// The CPU-heavy half of the data mover — keyed hashing, zstd, AES-GCM and the
// check that every sealed blob decodes back to its input — runs on worker
// threads so that every core compresses while the main thread reads and uploads.
//
// Memory is fixed up front: a ring of slots in shared memory, each an input
// and an output buffer one block (plus seal overhead) long. The main thread
// reads a block straight into a slot, the threads work in place, and the main
// thread copies the sealed result into the pack. Nothing per block is
// allocated on the main thread, so peak memory does not grow with the disk.
//
// The main thread owns the dedup index, so it learns a block's ID first and asks
// for the (expensive) compression only when the block is new: ten VMs cloned from
// one image cost ten hashes per block, not ten compressions. A block the shared
// filter of known IDs says is surely new (worker/id-filter.ts) is compressed at
// once instead, with its ID and sealed result in one answer: no second round trip.
//
// The thread body is plain JavaScript evaluated from a string, so the same
// code runs from TypeScript sources (tsx), from the esbuild worker bundle and
// on the worker machine without a second file to ship.

import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { alignedSharedMemory, DIRECT_IO_ALIGNMENT } from '../shared/local/direct-io.js';
import { ID_FILTER_THREAD_SOURCE, type IdFilter } from './id-filter.js';
import type { BlockIdFunction } from './format.js';

const THREAD_SOURCE = ID_FILTER_THREAD_SOURCE + String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const crypto = require('node:crypto');
// The low-level binding compresses into buffers we own: no allocation per block.
const zstd = require(workerData.zstdBindingPath);
// Keyed BLAKE3, format 2's block IDs (native, SIMD: 2–3 times the speed of SHA-256 here). Loaded
// as the thread starts, off the critical path; where it cannot load, only computing a format 2
// block ID fails (a restore never computes one).
let Blake3Hasher, blake3Missing;
try { if (workerData.blake3Path) ({ Blake3Hasher } = require(workerData.blake3Path)); } catch (e) { blake3Missing = e; }
// Keys, codec settings and the shared slots arrive in the first message ('configure'): the
// thread can start while the repository's key is still being unwrapped.
let encKey, idKey, blockIdOf, slotSize, inputs, outputs, cctx, dctx, packed, unpacked, opened;
// The filter of known block IDs ('filter' message): absent until a backup sends one.
let filterWords, filterMask;
function configure(c) {
  encKey = Buffer.from(c.encKey);
  idKey = Buffer.from(c.idKey);
  // A block's ID, as the repository's config names the function (docs/repository-format.md).
  if (c.blockId === 'blake3') {
    blockIdOf = Blake3Hasher
      ? (data) => Blake3Hasher.newKeyed(idKey).update(data).digestBuffer()
      : () => { throw new Error('keyed BLAKE3 (@napi-rs/blake-hash), which this repository makes its block IDs with, does not load on this machine (' + String(blake3Missing && blake3Missing.message || 'not installed') + ') — run npm ci on this platform'); };
  } else if (c.blockId === 'hmac-sha256') {
    blockIdOf = (data) => crypto.createHmac('sha256', idKey).update(data).digest();
  } else throw new Error('unknown block ID function ' + c.blockId);
  slotSize = c.slotSize;
  inputs = Buffer.from(c.inputs);
  outputs = Buffer.from(c.outputs);
  cctx = new zstd.CCtx();
  cctx.setParameter(zstd.CParameter.compressionLevel, c.level);
  // Parameters only shape compression, never decoding: one this zstd does not know is skipped.
  for (const [name, value] of Object.entries(c.params || {})) if (zstd.CParameter[name] !== undefined) cctx.setParameter(zstd.CParameter[name], value);
  dctx = new zstd.DCtx();
  packed = Buffer.allocUnsafe(zstd.compressBound(slotSize));
  unpacked = Buffer.allocUnsafe(slotSize);
  opened = Buffer.allocUnsafe(slotSize);
}
const CHUNK = 64 * 1024;
let garbage = 0;
// Sealing and opening allocate (node:crypto has no update-into): twice the sealed bytes per
// block. Collecting every 4 MiB of that keeps it from piling up to V8's 64 MiB external-memory
// trigger in each thread; counted in bytes, not blocks, because a raw (incompressible) block
// leaves three times the garbage of a compressed one.
const GC_EVERY = 4 * 1024 * 1024;
let collectGarbage;
try { require('node:v8').setFlagsFromString('--expose-gc'); collectGarbage = require('node:vm').runInNewContext('gc'); } catch { collectGarbage = undefined; }
function maybeGc(bytes) { garbage += bytes; if (collectGarbage && garbage >= GC_EVERY) { garbage = 0; collectGarbage({ type: 'minor' }); } }
const CODEC_NONE = 0, CODEC_ZSTD = 1;
const aadPrefix = Buffer.from('tender-v1:block:', 'utf8');
const zero = Buffer.alloc(65536);

function input(slot, len) { return inputs.subarray(slot * slotSize, slot * slotSize + len); }
function output(slot) { return outputs.subarray(slot * slotSize, (slot + 1) * slotSize); }
function isZero(b) {
  for (let i = 0; i < b.length; i += zero.length) {
    const end = Math.min(b.length, i + zero.length);
    if (!b.subarray(i, end).equals(zero.subarray(0, end - i))) return false;
  }
  return true;
}
// Sealed layout: [cipher=1][nonce 12][ciphertext][tag 16]; plaintext = [codec][payload].
function sealInto(out, codec, payload, aad) {
  const nonce = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', encKey, nonce);
  c.setAAD(aad);
  out[0] = 1; nonce.copy(out, 1);
  let at = 13;
  at += c.update(Buffer.of(codec)).copy(out, at);
  // In 64 KiB steps: node:crypto allocates every update's output, so small steps keep the
  // garbage each block leaves behind small.
  for (let i = 0; i < payload.length; i += CHUNK) at += c.update(payload.subarray(i, Math.min(payload.length, i + CHUNK))).copy(out, at);
  at += c.final().copy(out, at);
  at += c.getAuthTag().copy(out, at);
  return at;
}
/** Opens a sealed blob into the thread's opened scratch buffer (valid until the next call). */
function openSealed(sealed, aad) {
  if (sealed.length < 30 || sealed[0] !== 1) return undefined;
  const d = crypto.createDecipheriv('aes-256-gcm', encKey, sealed.subarray(1, 13));
  d.setAAD(aad); d.setAuthTag(sealed.subarray(sealed.length - 16));
  const body = sealed.subarray(13, sealed.length - 16);
  if (body.length > opened.length) return undefined;
  let at = 0;
  try {
    for (let i = 0; i < body.length; i += CHUNK) at += d.update(body.subarray(i, Math.min(body.length, i + CHUNK))).copy(opened, at);
    at += d.final().copy(opened, at);
  } catch { return undefined; }
  return opened.subarray(0, at);
}
/** Decodes into the thread's scratch buffer (valid until the next call). */
function decodePlain(plain) {
  if (plain[0] === CODEC_NONE) return plain.subarray(1);
  if (plain[0] === CODEC_ZSTD) return unpacked.subarray(0, dctx.decompress(unpacked, plain.subarray(1)));
  throw new Error('unknown codec ' + plain[0]);
}

/** Compresses and seals the slot's input into its output, and checks the result decodes back. */
function encode(slot, len, id) {
  const data = input(slot, len);
  const aad = Buffer.concat([aadPrefix, id]);
  const clen = cctx.compress2(packed, data);
  // Stored raw when zstd saves under 2%: restore then skips decompression.
  const useZstd = clen < data.length * 0.98;
  const out = output(slot);
  const sealedLen = sealInto(out, useZstd ? CODEC_ZSTD : CODEC_NONE, useZstd ? packed.subarray(0, clen) : data, aad);
  // Decode what is about to be stored and compare with the input: a codec
  // bug must fail this backup, not a restore years later.
  const back = openSealed(out.subarray(0, sealedLen), aad);
  const raw = back && decodePlain(back);
  if (!raw || !raw.equals(data)) throw new Error('self-check failed: the sealed block does not decode to its input');
  return { len: sealedLen, codec: useZstd ? 'zstd' : 'none' };
}

parentPort.on('message', (m) => {
  if (m.op === 'configure') { configure(m); return; }
  if (m.op === 'filter') { filterWords = m.memory ? new Int32Array(m.memory) : undefined; filterMask = m.bits - 1; recentlySealed.clear(); return; }
  try {
    if (!cctx) throw new Error('codec thread used before it was configured');
    if (m.op === 'hash') {
      const data = input(m.slot, m.len);
      if (isZero(data)) { parentPort.postMessage({ req: m.req, zero: true }); return; }
      const digest = blockIdOf(data);
      // IDs travel as hex: posting a Buffer would clone the whole 8 KiB pool it lives in.
      const id = digest.toString('hex');
      if (m.encodeIfNew && filterWords && !recentlySealed.has(id) && !filterMayHave(filterWords, filterMask, digest, filterProbe, filterProbeBytes)) {
        const sealed = encode(m.slot, m.len, digest);
        noteSealed(id);
        parentPort.postMessage({ req: m.req, zero: false, id, sealed });
        maybeGc(2 * sealed.len);
        return;
      }
      parentPort.postMessage({ req: m.req, zero: false, id });
    } else if (m.op === 'encode') {
      const sealed = encode(m.slot, m.len, Buffer.from(m.id, 'hex'));
      parentPort.postMessage({ req: m.req, ...sealed });
      maybeGc(2 * sealed.len);
    } else if (m.op === 'decode') {
      const id = Buffer.from(m.id, 'hex');
      const plain = openSealed(input(m.slot, m.len), Buffer.concat([aadPrefix, id]));
      if (!plain) { parentPort.postMessage({ req: m.req, error: 'does not authenticate (damaged, or not this repository\'s)' }); return; }
      // Decompressed straight into the slot's output: no extra copy of every restored block.
      const out = output(m.slot);
      let rawLen;
      if (plain[0] === CODEC_ZSTD) rawLen = dctx.decompress(out, plain.subarray(1));
      else if (plain[0] === CODEC_NONE) rawLen = plain.copy(out, 0, 1);
      else throw new Error('unknown codec ' + plain[0]);
      const raw = out.subarray(0, rawLen);
      if (raw.length !== m.rawLength) { parentPort.postMessage({ req: m.req, error: 'decoded to ' + raw.length + ' bytes, expected ' + m.rawLength }); return; }
      if (m.checkId && !blockIdOf(raw).equals(id)) {
        parentPort.postMessage({ req: m.req, error: 'content does not match its block ID' }); return;
      }
      parentPort.postMessage({ req: m.req, len: raw.length });
      maybeGc(m.len);
    }
  } catch (e) {
    parentPort.postMessage({ req: m.req, error: String(e && e.message || e) });
  }
});
`;

/** zstd compression parameters a repository may set besides the level (names as in zstd's ZSTD_c_*). */
export interface ZstdParams {
  hashLog?: number;
  chainLog?: number;
  minMatch?: number;
}

/** A block sealed into its slot's output: its sealed length and the codec inside. */
export interface Sealed {
  len: number;
  codec: 'zstd' | 'none';
}

interface Pending {
  resolve(v: any): void;
  reject(e: Error): void;
}

class Thread {
  readonly pending = new Map<number, Pending>();
  failed?: Error;
  constructor(readonly worker: Worker, failed?: Error) {
    this.failed = failed;
    worker.on('message', (m: any) => {
      const p = this.pending.get(m.req);
      if (!p) return;
      this.pending.delete(m.req);
      if (this.pending.size === 0) worker.unref();
      if (m.error) p.reject(new Error(m.error));
      else p.resolve(m);
    });
    worker.on('error', (e) => this.failAll(e));
    worker.on('exit', (code) => this.failAll(new Error(`codec thread exited with code ${code}`)));
  }
  failAll(e: Error) {
    this.failed ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

/** One block's worth of shared memory: read into `input`, find the result in `output`. */
export interface Slot {
  readonly index: number;
  /** blockSize + seal overhead bytes. */
  readonly input: Buffer;
  readonly output: Buffer;
}

/**
 * Codec threads started before their keys and settings are known (while the repository's key
 * is unwrapped): starting a thread — its isolate, the zstd addon — is then off the critical
 * path. A CodecPool takes them over; threads no pool took are ended with `terminate`.
 */
export class CodecThreads {
  readonly workers: Worker[];
  /** A thread that failed or ended before a pool took it over. */
  readonly failures = new Map<Worker, Error>();
  private taken = false;
  constructor(count = availableParallelism()) {
    const require = createRequire(import.meta.url);
    let blake3Path: string | undefined;
    try {
      blake3Path = require.resolve('@napi-rs/blake-hash');
    } catch {
      // Not installed: the threads say so when a block ID is asked of them.
    }
    const workerData = { zstdBindingPath: require.resolve('zstd-napi/binding'), blake3Path };
    this.workers = Array.from({ length: Math.max(1, count) }, () => {
      const w = new Worker(THREAD_SOURCE, { eval: true, workerData });
      // Idle threads never keep the process alive (see CodecPool.call).
      w.unref();
      const early = (e: Error) => {
        if (!this.failures.has(w)) this.failures.set(w, e);
      };
      w.on('error', early);
      w.on('exit', (code) => early(new Error(`codec thread exited with code ${code}`)));
      return w;
    });
  }
  take(): Worker[] {
    if (this.taken) throw new Error('these codec threads already belong to a pool');
    this.taken = true;
    return this.workers;
  }
  async terminate(): Promise<void> {
    if (this.taken) return;
    this.taken = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export interface CodecPoolOptions {
  encryptionKey: Buffer;
  idKey: Buffer;
  /** How block IDs are made: the repository's config says (blockIdFunctionOf). */
  blockId: BlockIdFunction;
  blockSize: number;
  /** zstd level (default 3). */
  level?: number;
  /** zstd parameters that override the level's (frames decode the same whatever they are). */
  params?: ZstdParams;
  /** Threads (default: every core). */
  threads?: number;
  /** Slots per thread: blocks in flight (default 6: enough that no thread waits for work). */
  depth?: number;
  /** Threads already started (their count wins over `threads`). */
  started?: CodecThreads;
}

export class CodecPool {
  private readonly threads: Thread[];
  private readonly slots: Slot[];
  private readonly free: Slot[];
  private readonly waiting: Array<(s: Slot) => void> = [];
  private seq = 0;
  private next = 0;
  readonly slotSize: number;
  /** Blocks compressed and sealed so far (by `encode`, or by `hash` for a block that was surely new). */
  compressed = 0;

  constructor(opts: CodecPoolOptions) {
    const n = opts.started ? opts.started.workers.length : Math.max(1, opts.threads ?? availableParallelism());
    const count = n * (opts.depth ?? 6);
    // Room for a block stored raw plus its seal, or a zstd frame that grew a little; a whole
    // number of pages, in page-aligned memory, so every slot starts aligned and a restored
    // block is written from its slot with direct I/O (shared/local/direct-io.ts).
    this.slotSize = Math.ceil((opts.blockSize + 4096) / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT;
    const inputs = alignedSharedMemory(count * this.slotSize);
    const outputs = alignedSharedMemory(count * this.slotSize);
    // Threads are taken only once the memory is there: a pool that could not be made leaves
    // started threads to whoever started them (Repository.close ends them).
    const started = opts.started ?? new CodecThreads(n);
    const workers = started.take();
    this.slots = Array.from({ length: count }, (_, index) => ({
      index,
      input: Buffer.from(inputs, index * this.slotSize, this.slotSize),
      output: Buffer.from(outputs, index * this.slotSize, this.slotSize),
    }));
    this.free = [...this.slots];
    this.threads = workers.map((w) => {
      w.postMessage({ op: 'configure', encKey: opts.encryptionKey, idKey: opts.idKey, blockId: opts.blockId, level: opts.level ?? 3, params: opts.params, slotSize: this.slotSize, inputs, outputs });
      return new Thread(w, started.failures.get(w));
    });
  }

  get size(): number {
    return this.threads.length;
  }

  get slotCount(): number {
    return this.slots.length;
  }

  /** Waits for a free slot. Every acquired slot must be released. */
  acquire(): Promise<Slot> {
    const s = this.free.pop();
    if (s) return Promise.resolve(s);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(slot: Slot): void {
    const w = this.waiting.shift();
    if (w) w(slot);
    else this.free.push(slot);
  }

  private call(msg: Record<string, unknown>): Promise<any> {
    // Least-loaded thread, round-robin among equals.
    let t = this.threads[this.next++ % this.threads.length]!;
    for (const x of this.threads) if (x.pending.size < t.pending.size) t = x;
    if (t.failed) return Promise.reject(t.failed);
    const req = ++this.seq;
    return new Promise((resolve, reject) => {
      // A thread with work in flight keeps the process alive (an idle one does not): otherwise a
      // purely CPU-bound stretch, with no I/O pending, could let the event loop end mid-backup.
      if (t.pending.size === 0) t.worker.ref();
      t.pending.set(req, { resolve, reject });
      t.worker.postMessage({ ...msg, req });
    });
  }

  /**
   * Keyed hash of slot.input[0, len); all-zero blocks come back as `zero` (never stored). With
   * `encodeIfNew`, a block the filter (useFilter) says is surely new is also compressed and
   * sealed into slot.output, as `encode` would, and comes back with `sealed`.
   */
  async hash(slot: Slot, len: number, encodeIfNew = false): Promise<{ zero: true } | { zero: false; id: Buffer; hex: string; sealed?: Sealed }> {
    const m = await this.call({ op: 'hash', slot: slot.index, len, encodeIfNew });
    if (m.zero) return { zero: true };
    if (m.sealed) this.compressed++;
    return { zero: false, id: Buffer.from(m.id, 'hex'), hex: m.id, ...(m.sealed ? { sealed: m.sealed as Sealed } : {}) };
  }

  /** Compresses and seals slot.input[0, len) into slot.output; returns the sealed length. Self-checked. */
  async encode(slot: Slot, len: number, id: Buffer): Promise<Sealed> {
    const m = await this.call({ op: 'encode', slot: slot.index, len, id: id.toString('hex') });
    this.compressed++;
    return { len: m.len, codec: m.codec };
  }

  /** Gives every thread the filter of known block IDs that `hash(…, true)` consults, replacing any earlier one; undefined takes it away. */
  useFilter(filter: IdFilter | undefined): void {
    for (const t of this.threads) t.worker.postMessage({ op: 'filter', memory: filter?.memory, bits: filter?.bits ?? 0 });
  }

  /** Opens the sealed block in slot.input[0, len) into slot.output; returns the raw length. */
  async decode(slot: Slot, len: number, id: Buffer, rawLength: number, checkId = false): Promise<number> {
    const m = await this.call({ op: 'decode', slot: slot.index, len, id: id.toString('hex'), rawLength, checkId });
    return m.len;
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }
}
