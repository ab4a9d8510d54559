import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TransientError } from '../../../shared/core/errors.js';
import {
  RequestTimeoutError,
  createLimiter,
  createWriteBehind,
  fullJitterDelay,
  isAllZero,
  withRetries,
  withTimeout,
} from '../../../worker/sources/retry.js';

const noSleep = { sleep: async () => {} };

test('withRetries returns the first success after transient failures', async () => {
  // Prepare
  let calls = 0;
  const fn = async () => {
    calls++;
    if (calls < 3) throw new TransientError('throttled');
    return 'ok';
  };

  // Act
  const result = await withRetries(fn, { attempts: 5, baseMs: 10, maxMs: 100, isRetryable: (e) => e instanceof TransientError, ...noSleep });

  // Assess
  assert.equal(result, 'ok');
  assert.equal(calls, 3);
});

test('withRetries gives up after the attempt budget and rethrows the last error', async () => {
  // Prepare
  let calls = 0;
  const fn = async () => {
    calls++;
    throw new TransientError(`failure ${calls}`);
  };

  // Act / Assess
  await assert.rejects(withRetries(fn, { attempts: 4, baseMs: 10, maxMs: 100, isRetryable: () => true, ...noSleep }), /failure 4/);
  assert.equal(calls, 4);
});

test('withRetries does not retry an error that cannot go away', async () => {
  // Prepare
  let calls = 0;
  const fn = async () => {
    calls++;
    throw new Error('access denied');
  };

  // Act / Assess
  await assert.rejects(withRetries(fn, { attempts: 5, baseMs: 10, maxMs: 100, isRetryable: () => false, ...noSleep }), /access denied/);
  assert.equal(calls, 1);
});

test('withRetries waits a full-jitter delay: random share of an exponentially growing, capped window', async () => {
  // Prepare
  const waits: number[] = [];
  const fn = async () => {
    throw new TransientError('busy');
  };

  // Act
  await assert.rejects(
    withRetries(fn, {
      attempts: 6,
      baseMs: 100,
      maxMs: 1000,
      isRetryable: () => true,
      random: () => 0.5,
      sleep: async (ms) => {
        waits.push(ms);
      },
    }),
  );

  // Assess: windows 100, 200, 400, 800, 1000 (capped); half of each.
  assert.deepEqual(waits, [50, 100, 200, 400, 500]);
});

test('fullJitterDelay stays within [0, window) and never exceeds the cap', () => {
  assert.equal(fullJitterDelay(0, 100, 1000, () => 0), 0);
  assert.equal(fullJitterDelay(3, 100, 1000, () => 0.999), 799);
  assert.equal(fullJitterDelay(2000, 100, 1000, () => 0.999), 999);
});

test('withTimeout stops waiting for a call that never answers, and aborts its signal', async () => {
  // Prepare
  let aborted = false;
  const hang = (signal: AbortSignal) =>
    new Promise<never>(() => {
      signal.addEventListener('abort', () => (aborted = true));
    });

  // Act / Assess
  await assert.rejects(withTimeout(20, 'test request', hang), (e) => e instanceof RequestTimeoutError && /test request/.test(e.message));
  assert.equal(aborted, true);
});

test('withTimeout returns the answer of a call that finishes in time', async () => {
  assert.equal(await withTimeout(10_000, 'quick', async () => 42), 42);
});

test('createLimiter never runs more than its limit at once', async () => {
  // Prepare
  const limiter = createLimiter(3);
  let running = 0;
  let peak = 0;
  const task = async () => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setImmediate(r));
    running--;
  };

  // Act
  await Promise.all(Array.from({ length: 20 }, () => limiter.run(task)));

  // Assess
  assert.equal(peak, 3);
  assert.equal(running, 0);
});

test('createWriteBehind reports the first failure to drain', async () => {
  // Prepare
  const wb = createWriteBehind(2);
  await wb.submit(async () => {});
  await wb.submit(async () => {
    throw new Error('disk full');
  });

  // Act / Assess
  await assert.rejects(wb.drain(), /disk full/);
  await assert.rejects(wb.submit(async () => {}), /disk full/);
});

test('isAllZero tells zero blocks from blocks with one set byte, at any alignment', () => {
  const block = new Uint8Array(512 * 1024 + 3);
  assert.equal(isAllZero(block), true);
  assert.equal(isAllZero(block.subarray(1)), true);
  block[block.length - 1] = 1;
  assert.equal(isAllZero(block), false);
  assert.equal(isAllZero(block.subarray(1)), false);
  assert.equal(isAllZero(new Uint8Array(0)), true);
});
