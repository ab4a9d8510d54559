// zstd for the repository's own objects (config, index files, manifests, block maps), on the
// main thread, straight from zstd-napi's native binding — the part the codec threads use too.
//
// The package's JavaScript API costs more to load than everything else the worker loads at
// start-up: imported from an ES module it goes through the CommonJS interop, which parses each
// of its five files, and here that was 14 ms before the repository's key could start to unwrap.
// The binding alone is one small file and the addon, and it loads when first needed: the open
// asks for it while the key unwraps (`loadZstd`), when the main thread only waits.

import { createRequire } from 'node:module';
import type * as ZstdBinding from 'zstd-napi/binding';

let binding: typeof ZstdBinding | undefined;
let cctx: ZstdBinding.CCtx | undefined;
let dctx: ZstdBinding.DCtx | undefined;

/** Loads the binding now (it is otherwise loaded on first use). */
export function loadZstd(): typeof ZstdBinding {
  binding ??= createRequire(import.meta.url)('zstd-napi/binding') as typeof ZstdBinding;
  return binding;
}

/** One zstd frame of `data` at `level`, its content size recorded (as decompressObject needs). */
export function compressObject(data: Uint8Array, level = 3): Buffer {
  const z = loadZstd();
  if (!cctx) cctx = new z.CCtx();
  cctx.setParameter(z.CParameter.compressionLevel, level);
  const out = Buffer.allocUnsafe(z.compressBound(data.length));
  return out.subarray(0, cctx.compress2(out, data));
}

/**
 * Decodes the zstd frames in `data`. Frames that record their size (every frame Tender writes)
 * decode in one call into a buffer of that size; any other is decoded in chunks.
 */
export function decompressObject(data: Uint8Array): Buffer {
  const z = loadZstd();
  if (!dctx) dctx = new z.DCtx();
  let total = 0;
  for (let frame = data; frame.length > 0; frame = frame.subarray(z.findFrameCompressedSize(frame))) {
    const size = z.getFrameContentSize(frame);
    if (size === null) return decompressInChunks(z, data);
    total += size;
  }
  const out = Buffer.allocUnsafe(total);
  const n = dctx.decompress(out, data);
  if (n !== total) throw new Error(`zstd frames decoded to ${n} bytes where their headers say ${total}`);
  return out;
}

function decompressInChunks(z: typeof ZstdBinding, data: Uint8Array): Buffer {
  // A context of its own: one left in the middle of a frame by damaged data must not meet the next object.
  const d = new z.DCtx();
  const chunks: Buffer[] = [];
  let rest = data;
  // Non-zero while a frame is not complete: input still to read, or output still to flush.
  let unfinished = 1;
  while (rest.length > 0 || unfinished !== 0) {
    const chunk = Buffer.allocUnsafe(Math.max(z.dStreamOutSize(), rest.length));
    const [hint, produced, consumed] = d.decompressStream(chunk, rest);
    if (produced === 0 && consumed === 0) throw new Error('zstd data ends in the middle of a frame');
    unfinished = hint;
    chunks.push(chunk.subarray(0, produced));
    rest = rest.subarray(consumed);
  }
  return Buffer.concat(chunks);
}
