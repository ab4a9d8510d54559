// The filter of known block IDs the codec threads consult: an ID added is never reported new
// (whether added from bytes or from the dedup index's words), and an ID never added is reported
// new nearly always — the rest only cost a round trip between threads.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { IdFilter, filterPays } from '../../worker/id-filter.js';
import { BlockIndex } from '../../worker/block-index.js';

const key = randomBytes(32);
const idOf = (i: number) => createHmac('sha256', key).update(`block ${i}`).digest();

test('every ID added is reported as maybe known; about 1% of others are', () => {
  // Prepare
  const n = 50_000;
  const filter = new IdFilter(n);
  // Act
  for (let i = 0; i < n; i++) filter.add(idOf(i));
  // Assess
  for (let i = 0; i < n; i++) assert.equal(filter.mayHave(idOf(i)), true, `block ${i} was added`);
  let falsePositives = 0;
  for (let i = n; i < 3 * n; i++) if (filter.mayHave(idOf(i))) falsePositives++;
  assert.ok(falsePositives / (2 * n) < 0.03, `${falsePositives} of ${2 * n} IDs never added looked known`);
});

test('the dedup index fills it without making a string of each ID, and forgotten packs stay out', () => {
  // Prepare: 1000 blocks in two packs; one pack is forgotten (marked for deletion).
  const index = new BlockIndex();
  for (let i = 0; i < 1000; i++) index.add(idOf(i), { pack: i < 500 ? 'kept' : 'marked', offset: i, length: 10, rawLength: 524288 });
  index.deletePacks(new Set(['marked']));
  const filter = new IdFilter(1000);
  // Act
  let visited = 0;
  index.forEachIdWords((words, at) => {
    visited++;
    filter.addWords(words, at);
  });
  // Assess
  assert.equal(visited, 500);
  for (let i = 0; i < 500; i++) assert.equal(filter.mayHave(idOf(i)), true);
  let looksKnown = 0;
  for (let i = 500; i < 1000; i++) if (filter.mayHave(idOf(i))) looksKnown++;
  assert.ok(looksKnown < 25, `${looksKnown} of 500 forgotten blocks looked known`);
});

test('a filter for a huge repository stays bounded (it only grows less exact)', () => {
  assert.equal(new IdFilter(0).bits, 2 ** 16);
  assert.equal(new IdFilter(2 ** 30).memory.byteLength, 32 * 1024 * 1024);
});

test('a run that reads too few blocks for the filter to pay for filling it goes without', () => {
  assert.equal(filterPays(2706, 329), true, 'an incremental of a small repository');
  assert.equal(filterPays(0, 0), true);
  assert.equal(filterPays(16_000_000, 50), false, 'fifty changed blocks against sixteen million known');
  assert.equal(filterPays(16_000_000, 100_000), true);
});
