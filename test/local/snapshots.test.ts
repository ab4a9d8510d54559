import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, readFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalSnapshots } from '../../shared/local/snapshots.js';
import { createLocalCatalog } from '../../shared/local/catalog.js';
import { openImageSource } from '../../worker/sources/image-file.js';
import { fixedClock } from '../../shared/core/clock.js';
import { NotFoundError } from '../../shared/core/errors.js';

const MiB = 1024 * 1024;

async function setup() {
  const dir = await mkdtemp(join(tmpdir(), 'tender-snap-'));
  const disk = join(dir, 'disk.img');
  const fh = await open(disk, 'w');
  await fh.truncate(4 * MiB);
  await fh.write(Buffer.alloc(100_000, 7), 0, 100_000, MiB);
  await fh.close();
  const snaps = createLocalSnapshots({ vms: [{ id: 'vm-a', name: 'a', tags: { env: 't' }, disks: [{ id: 'root', path: disk }] }], workDir: dir, clock: fixedClock('2024-01-01T00:00:00Z') });
  const vm = (await snaps.findVms({ ids: ['vm-a'] }))[0]!;
  const ready = async (setId: string) => {
    for (let i = 0; i < 200; i++) {
      const s = await snaps.getSnapshotSet(setId);
      if (s.state !== 'pending') return s;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('snapshot never finished');
  };
  return { dir, disk, snaps, vm, ready, done: () => rm(dir, { recursive: true, force: true }) };
}

test('snapshots: a set is a point-in-time copy of every disk with a block digest map', async () => {
  const { disk, snaps, vm, ready, done } = await setup();
  try {
    const set = await snaps.createSnapshotSet({ runId: 'r1', vm, tags: { 'tender:policy': 'p' } });
    assert.equal(set.state, 'pending');
    const done1 = await ready(set.setId);
    assert.equal(done1.state, 'ready');
    const copy = done1.disks[0]!.snapshotId;
    assert.deepEqual(await readFile(copy), await readFile(disk));
    assert.ok(existsSync(`${copy}.blockmap`));
    assert.equal(done1.tags?.['tender:policy'], 'p');
    // The source changes afterwards: the snapshot does not.
    const fh = await open(disk, 'r+');
    await fh.write(Buffer.alloc(10, 9), 0, 10, 3 * MiB);
    await fh.close();
    assert.notDeepEqual(await readFile(copy), await readFile(disk));
  } finally {
    await done();
  }
});

test('snapshots: the next snapshot yields only the changed blocks', async () => {
  const { disk, snaps, vm, ready, done } = await setup();
  try {
    const s1 = await ready((await snaps.createSnapshotSet({ runId: 'r1', vm, tags: {} })).setId);
    const fh = await open(disk, 'r+');
    await fh.write(Buffer.alloc(10, 9), 0, 10, 3 * MiB + 5);
    await fh.close();
    const s2 = await ready((await snaps.createSnapshotSet({ runId: 'r2', vm, tags: {} })).setId);
    const src = await openImageSource(s2.disks[0]!.snapshotId);
    try {
      const changed = await src.changedBlocks(s1.disks[0]!.snapshotId);
      assert.deepEqual(changed, { blocks: [6], incremental: true });
    } finally {
      await src.close();
    }
  } finally {
    await done();
  }
});

test('snapshots: create is idempotent per run and VM; delete is idempotent; sets are listed oldest first', async () => {
  const { snaps, vm, ready, done } = await setup();
  try {
    const a = await snaps.createSnapshotSet({ runId: 'r1', vm, tags: {} });
    const b = await snaps.createSnapshotSet({ runId: 'r1', vm, tags: {} });
    assert.equal(a.setId, b.setId);
    await ready(a.setId);
    await snaps.createSnapshotSet({ runId: 'r2', vm, tags: {} });
    assert.deepEqual((await snaps.listSnapshotSets('vm-a')).map((s) => s.runId), ['r1', 'r2']);
    await snaps.deleteSnapshotSet(a.setId);
    await snaps.deleteSnapshotSet(a.setId);
    await assert.rejects(snaps.getSnapshotSet(a.setId), NotFoundError);
    await snaps.settle();
  } finally {
    await done();
  }
});

test('snapshots: VMs are found by id or tags; an unknown id names itself', async () => {
  const { snaps, done } = await setup();
  try {
    assert.equal((await snaps.findVms({ tags: { env: 't' } })).length, 1);
    assert.equal((await snaps.findVms({ tags: { env: 'other' } })).length, 0);
    await assert.rejects(snaps.findVms({ ids: ['vm-x'] }), (e: Error) => e instanceof NotFoundError && e.message.includes('vm-x'));
  } finally {
    await done();
  }
});

test('catalog: the last record per run and VM wins; filters by policy and VM', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-cat-'));
  try {
    const cat = createLocalCatalog({ workDir: dir });
    await cat.recordRun({ runId: 'r1', policy: 'p', vmId: 'a', outcome: 'failed', step: 'snapshot', finishedAt: '2024-01-01T00:00:00Z' });
    await cat.recordRun({ runId: 'r1', policy: 'p', vmId: 'a', outcome: 'succeeded', finishedAt: '2024-01-01T00:00:01Z' });
    await cat.recordRun({ runId: 'r1', policy: 'q', vmId: 'b', outcome: 'succeeded', finishedAt: '2024-01-01T00:00:02Z' });
    assert.deepEqual((await cat.listRuns({ policy: 'p' })).map((r) => r.outcome), ['succeeded']);
    assert.equal((await cat.listRuns()).length, 2);
    assert.equal((await cat.listRuns({ vmId: 'b' }))[0]!.policy, 'q');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
