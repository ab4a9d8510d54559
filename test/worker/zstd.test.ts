// zstd for the repository's own objects: what compressObject writes decodes back, and so does
// every other shape of zstd data an object may hold (several frames; a frame written by a
// stream, which does not record its size), while data cut short is refused, never half-decoded.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import type * as ZstdBinding from 'zstd-napi/binding';
import { compressObject, decompressObject } from '../../worker/zstd.js';

const z = createRequire(import.meta.url)('zstd-napi/binding') as typeof ZstdBinding;

/** Text-like data that compresses, with some random bytes in it. */
function sample(bytes: number): Buffer {
  const parts: Buffer[] = [];
  for (let n = 0; n < bytes; n += 1000) parts.push(Buffer.from(`{"block":${n},"pack":"${randomBytes(8).toString('hex')}"},`));
  return Buffer.concat(parts).subarray(0, bytes);
}

/** One frame written by the streaming API, in small steps: its header records no content size. */
function streamedFrame(data: Buffer): Buffer {
  const cctx = new z.CCtx();
  const out = Buffer.alloc(z.compressBound(data.length) + 1024);
  let at = 0;
  for (let i = 0; i < data.length; i += 4096) {
    const [, produced] = cctx.compressStream2(out.subarray(at), data.subarray(i, Math.min(data.length, i + 4096)), z.EndDirective.continue);
    at += produced;
  }
  for (;;) {
    const [left, produced] = cctx.compressStream2(out.subarray(at), Buffer.alloc(0), z.EndDirective.end);
    at += produced;
    if (left === 0) break;
  }
  return out.subarray(0, at);
}

test('what compressObject writes decodes back to the same bytes, empty and large alike', () => {
  for (const data of [Buffer.alloc(0), sample(100), sample(3 * 1024 * 1024)]) {
    // Act
    const packed = compressObject(data);
    // Assess
    assert.ok(data.length < 1000 || packed.length < data.length / 2, `${data.length} bytes compressed to ${packed.length}`);
    assert.equal(z.getFrameContentSize(packed), data.length, 'the frame records its size');
    assert.ok(decompressObject(packed).equals(data));
  }
});

test('several frames decode to their contents one after the other', () => {
  // Prepare
  const a = sample(5000);
  const b = sample(70_000);
  // Act
  const out = decompressObject(Buffer.concat([compressObject(a), compressObject(b, 1)]));
  // Assess
  assert.ok(out.equals(Buffer.concat([a, b])));
});

test('a frame that does not record its size still decodes (in chunks)', () => {
  // Prepare: larger than one output chunk, so the chunked path takes more than one step
  const data = sample(z.dStreamOutSize() * 3 + 123);
  const frame = streamedFrame(data);
  assert.equal(z.getFrameContentSize(frame), null, 'the test frame must not record its size');
  // Act + Assess
  assert.ok(decompressObject(frame).equals(data));
  assert.ok(decompressObject(Buffer.concat([compressObject(data), frame])).equals(Buffer.concat([data, data])));
});

test('zstd data cut short is refused', () => {
  // Prepare
  const packed = compressObject(sample(200_000));
  // Act + Assess
  assert.throws(() => decompressObject(packed.subarray(0, packed.length - 10)));
  assert.throws(() => decompressObject(packed.subarray(0, 5)));
  const streamed = streamedFrame(sample(300_000));
  assert.throws(() => decompressObject(streamed.subarray(0, streamed.length - 10)), /ends in the middle of a frame/);
  // Assess: data that is whole still decodes after a refusal
  const whole = sample(1000);
  assert.ok(decompressObject(streamedFrame(whole)).equals(whole));
  assert.ok(decompressObject(compressObject(whole)).equals(whole));
});
