import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyRetentionPolicy } from '../../shared/core/retention.js';

const none = { last: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 };

function ids(list: Array<{ id: string }>): string[] {
  return list.map((x) => x.id).sort();
}

const cases: Array<{ name: string; points: Array<[string, string]>; policy: Partial<typeof none>; keep: string[] }> = [
  { name: 'nothing to keep but the newest', points: [['a', '2024-05-01T02:00:00Z'], ['b', '2024-05-02T02:00:00Z']], policy: {}, keep: ['b'] },
  {
    name: 'daily keeps the newest point of each of the last N days',
    points: [
      ['d1-early', '2024-05-01T01:00:00Z'],
      ['d1-late', '2024-05-01T23:00:00Z'],
      ['d2', '2024-05-02T02:00:00Z'],
      ['d3', '2024-05-03T02:00:00Z'],
    ],
    policy: { daily: 2 },
    keep: ['d2', 'd3'],
  },
  {
    name: 'daily counts days back from the newest point, not from today',
    points: [
      ['old1', '2020-01-01T02:00:00Z'],
      ['old2', '2020-01-02T02:00:00Z'],
      ['old3', '2020-01-03T02:00:00Z'],
    ],
    policy: { daily: 7 },
    keep: ['old1', 'old2', 'old3'],
  },
  {
    name: 'a gap of days is not filled from older points',
    points: [
      ['may1', '2024-05-01T02:00:00Z'],
      ['may10', '2024-05-10T02:00:00Z'],
    ],
    policy: { daily: 3 },
    keep: ['may10'],
  },
  {
    name: 'weekly uses ISO weeks (Monday start)',
    points: [
      ['sun', '2024-05-05T02:00:00Z'], // Sunday, week 18
      ['mon', '2024-05-06T02:00:00Z'], // Monday, week 19
      ['wed', '2024-05-08T02:00:00Z'], // week 19
      ['prev', '2024-04-28T02:00:00Z'], // Sunday, week 17
    ],
    policy: { weekly: 2 },
    keep: ['sun', 'wed'],
  },
  {
    name: 'monthly and yearly keep each period\'s newest',
    points: [
      ['2023-12', '2023-12-31T02:00:00Z'],
      ['2024-01a', '2024-01-05T02:00:00Z'],
      ['2024-01b', '2024-01-20T02:00:00Z'],
      ['2024-02', '2024-02-10T02:00:00Z'],
    ],
    policy: { monthly: 2, yearly: 2 },
    keep: ['2023-12', '2024-01b', '2024-02'],
  },
  {
    name: 'last keeps the N newest whatever their day',
    points: [
      ['a', '2024-05-01T01:00:00Z'],
      ['b', '2024-05-01T02:00:00Z'],
      ['c', '2024-05-01T03:00:00Z'],
    ],
    policy: { last: 2 },
    keep: ['b', 'c'],
  },
  { name: 'an unreadable time is kept, never deleted', points: [['x', 'not a date'], ['y', '2024-05-01T00:00:00Z']], policy: {}, keep: ['x', 'y'] },
];

for (const c of cases) {
  test(`retention: ${c.name}`, () => {
    // Prepare
    const points = c.points.map(([id, time]) => ({ id, time }));
    // Act
    const d = applyRetentionPolicy(points, { ...none, ...c.policy });
    // Assess
    assert.deepEqual(ids(d.keep), [...c.keep].sort());
    assert.deepEqual(ids(d.remove), points.map((p) => p.id).filter((id) => !c.keep.includes(id)).sort());
  });
}

test('retention: every kept point says why', () => {
  const d = applyRetentionPolicy(
    [
      { id: 'a', time: '2024-05-01T02:00:00Z' },
      { id: 'b', time: '2024-05-02T02:00:00Z' },
    ],
    { ...none, daily: 7, monthly: 1 },
  );
  const b = d.keep.find((k) => k.id === 'b')!;
  const a = d.keep.find((k) => k.id === 'a')!;
  assert.deepEqual(b.reasons, ['newest', 'daily 2024-05-02', 'monthly 2024-05']);
  assert.deepEqual(a.reasons, ['daily 2024-05-01']);
});

test('retention: no points, nothing to do', () => {
  assert.deepEqual(applyRetentionPolicy([], { ...none, daily: 3 }), { keep: [], remove: [] });
});
