// The data mover end to end on local images: backup, incremental, dedup across
// disks and VMs, restore bit for bit, wrong passphrase, corruption, crash
// safety, prune. Images are small (a few MiB of 64 KiB blocks) so each case
// runs in well under a second.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, readFile, readdir, open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { addKey, initRepository, openOrInitRepository, openRepository, type Repository } from '../../worker/repository.js';
import { backupVm } from '../../worker/backup.js';
import { restoreDisk } from '../../worker/restore.js';
import { createRestorePointsPort, forgetRestorePoints, listRestorePoints, readAllManifests } from '../../worker/restore-points.js';
import { verifyRepository } from '../../worker/verify.js';
import { pruneRepository, acquireExclusiveLock } from '../../worker/prune.js';
import { createImageSink, openImageSource, writeBlockDigestMap } from '../../worker/sources/image-file.js';
import { createFolderStore } from '../../shared/local/folder-store.js';
import { createMemoryStore } from '../support/memory-store.js';
import { withFaults, SimulatedCrashError } from '../../shared/core/store-wrappers.js';
import type { ObjectStore } from '../../shared/ports/object-store.js';
import { tempDirs } from '../support/temp-dirs.js';
import { aadFor, seal } from '../../worker/crypto.js';
import { mapGet, packKey } from '../../worker/format.js';
import { AccessDeniedError, CorruptObjectError, LockedError, NotFoundError, WrongPassphraseError } from '../../shared/core/errors.js';

const BS = 64 * 1024;
const PASS = 'a long test passphrase';
const FAST = { scrypt: { N: 1024, r: 8, p: 1 }, blockSize: BS, packSize: 256 * 1024, threads: 2 };

const tempDir = tempDirs('tender-dm-');

/** An image of `blocks` blocks: compressible text, random data, and zero blocks mixed. */
function makeImage(blocks: number, seed: number): Buffer {
  const out = Buffer.alloc(blocks * BS);
  for (let i = 0; i < blocks; i++) {
    const kind = (i + seed) % 4;
    if (kind === 0) continue; // zeros
    const block = out.subarray(i * BS, (i + 1) * BS);
    if (kind === 1) randomBytes(BS).copy(block);
    else block.fill(`block ${i} of image ${seed} — some text that compresses well. `);
  }
  return out;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function backupImage(repo: Repository, path: string, opts: { vmId?: string; diskId?: string; parent?: string } = {}) {
  const source = await openImageSource(path, { blockSize: BS });
  try {
    return await backupVm(repo, {
      runId: `run-${Date.now()}`,
      policy: 'test',
      vm: { vmId: opts.vmId ?? 'vm-1', name: 'vm one', tags: { env: 'test' } },
      tags: { schedule: 'daily' },
      snapshotSetId: 'set-1',
      disks: [{ diskId: opts.diskId ?? 'root', source, snapshotRef: path, ...(opts.parent ? { parentSnapshotRef: opts.parent } : {}) }],
    });
  } finally {
    await source.close();
  }
}

async function restoreToBuffer(repo: Repository, id: string, diskId: string, dir: string): Promise<Buffer> {
  const target = join(dir, `restore-${randomBytes(4).toString('hex')}.img`);
  const manifest = await repo.readManifest(id);
  const disk = manifest.disks.find((d) => d.diskId === diskId)!;
  await restoreDisk(repo, id, diskId, await createImageSink(target, disk.sizeBytes, { blockSize: BS }));
  return readFile(target);
}

test('a full backup restores bit for bit, stores no zero blocks and reveals no content in block IDs', async () => {
  const dir = await tempDir();
  const image = makeImage(24, 1);
  await writeFile(join(dir, 'disk.img'), image);
  const store = createFolderStore(join(dir, 'repo'));
  const repo = await initRepository(store, PASS, FAST);

  const result = await backupImage(repo, join(dir, 'disk.img'));

  assert.equal(result.disks[0]!.blocksRead, 24);
  assert.equal(result.disks[0]!.blocksNew, 18, 'six zero blocks are not stored');
  assert.equal(result.disks[0]!.incremental, false);
  const back = await restoreToBuffer(repo, result.restorePointId, 'root', dir);
  assert.equal(sha(back), sha(image));
  // Block IDs are keyed: a plain SHA-256 of a block appears nowhere in the repository's names.
  const plainIds = new Set(Array.from({ length: 24 }, (_, i) => sha(image.subarray(i * BS, (i + 1) * BS))));
  for (const id of repo.index.keys()) assert.ok(!plainIds.has(id));
  await repo.close();
});

test('an incremental reads only changed blocks and still restores the whole disk', async () => {
  const dir = await tempDir();
  const v1 = makeImage(32, 2);
  const v2 = Buffer.from(v1);
  randomBytes(BS).copy(v2, 5 * BS); // changed
  v2.fill(0, 9 * BS, 10 * BS); // cleared
  v2.fill('new text ', 12 * BS, 13 * BS); // changed
  await writeFile(join(dir, 'v1.img'), v1);
  await writeFile(join(dir, 'v2.img'), v2);
  await writeBlockDigestMap(join(dir, 'v1.img'), BS);
  await writeBlockDigestMap(join(dir, 'v2.img'), BS);
  const repo = await initRepository(createMemoryStore(), PASS, FAST);

  const full = await backupImage(repo, join(dir, 'v1.img'));
  const inc = await backupImage(repo, join(dir, 'v2.img'), { parent: join(dir, 'v1.img') });

  const disk = inc.disks[0]!;
  assert.equal(disk.incremental, true);
  assert.equal(disk.blocksRead, 3, 'only the three changed blocks are read');
  assert.ok(disk.bytesRead < full.disks[0]!.bytesRead / 8);
  const points = await listRestorePoints(repo);
  assert.equal(points.length, 2);
  assert.equal(points[1]!.parentId, full.restorePointId);
  assert.equal(sha(await restoreToBuffer(repo, inc.restorePointId, 'root', dir)), sha(v2));
  assert.equal(sha(await restoreToBuffer(repo, full.restorePointId, 'root', dir)), sha(v1));
  await repo.close();
});

test('an incremental that cannot diff says so and reads everything (never a silent fallback)', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'v1.img'), makeImage(8, 3));
  await writeFile(join(dir, 'v2.img'), makeImage(8, 4));
  const repo = await initRepository(createMemoryStore(), PASS, FAST);
  await backupImage(repo, join(dir, 'v1.img'));

  // v1 has no digest map: the source cannot compute the diff.
  const inc = await backupImage(repo, join(dir, 'v2.img'), { parent: join(dir, 'v1.img') });
  assert.equal(inc.disks[0]!.incremental, false);
  assert.match(inc.disks[0]!.reason ?? '', /full read/);
  assert.equal(inc.disks[0]!.blocksRead, 8);

  // A parent the repository never saw: also a full read, with the reason.
  const orphan = await backupImage(repo, join(dir, 'v2.img'), { parent: '/nowhere/snap.img' });
  assert.match(orphan.disks[0]!.reason ?? '', /no restore point of disk root from snapshot \/nowhere\/snap.img/);
  await repo.close();
});

test('within one run, a block repeated after the pack of its first copy is uploaded and indexed is still stored once', async () => {
  // Prepare: 24 distinct random blocks (incompressible: a 256 KiB pack closes every 4 of them, so
  // packs are uploaded and indexed all through the run), three times over.
  const dir = await tempDir();
  const kinds = Array.from({ length: 24 }, () => randomBytes(BS));
  const image = Buffer.concat([...kinds, ...kinds, ...kinds]);
  await writeFile(join(dir, 'disk.img'), image);
  // Pack uploads that take a while: repeats also arrive while the pack of their first copy is
  // still on its way (sealed, not indexed yet).
  const inner = createMemoryStore();
  let packPuts = 0;
  const slow: ObjectStore = { ...inner, location: inner.location, put: async (k, b) => (k.startsWith('data/') && (packPuts++, await new Promise((r) => setTimeout(r, 15))), inner.put(k, b)) };
  const repo = await initRepository(slow, PASS, FAST);
  // Act
  const r = await backupImage(repo, join(dir, 'disk.img'));
  // Assess
  assert.equal(r.disks[0]!.blocksRead, 72);
  assert.equal(r.disks[0]!.blocksNew, 24);
  assert.equal(repo.index.size, 24);
  assert.equal(packPuts, 6, 'four blocks a pack: nothing uploaded twice');
  assert.equal(sha(await restoreToBuffer(repo, r.restorePointId, 'root', dir)), sha(image));
  await repo.close();
});

test('identical blocks are stored once across disks and across VMs', async () => {
  const dir = await tempDir();
  const golden = makeImage(40, 5);
  await writeFile(join(dir, 'golden.img'), golden);
  const store = createMemoryStore();
  const repo = await initRepository(store, PASS, FAST);
  const bytes = () => [...store.objects.values()].reduce((s, o) => s + o.data.length, 0);

  await backupImage(repo, join(dir, 'golden.img'), { vmId: 'vm-0' });
  const afterOne = bytes();
  const compressedOnce = repo.blocksCompressed;
  for (let i = 1; i < 10; i++) {
    const r = await backupImage(repo, join(dir, 'golden.img'), { vmId: `vm-${i}` });
    assert.equal(r.disks[0]!.blocksNew, 0);
  }

  // Ten clones cost one copy of the data plus ten small manifests and block maps, and the
  // clones were hashed, never compressed.
  assert.ok(bytes() < afterOne * 1.1, `${bytes()} bytes for ten clones vs ${afterOne} for one`);
  assert.ok(compressedOnce > 0);
  assert.equal(repo.blocksCompressed, compressedOnce, 'no block of a clone was compressed');
  await repo.close();
});

test('a key record that cannot be read does not stop another from opening the repository; alone, its error is what the open reports', async () => {
  // Prepare: a repository with two passphrases, and a store that refuses to serve the first record.
  const inner = createMemoryStore();
  const repo = await initRepository(inner, PASS, FAST);
  const second = await addKey(repo, 'another long passphrase', { scrypt: FAST.scrypt });
  await repo.close();
  const first = [...inner.objects.keys()].filter((k) => k.startsWith('keys/') && k !== second)[0]!;
  const refusing: ObjectStore = { ...inner, location: inner.location, get: (k, r) => (k === first ? Promise.reject(new AccessDeniedError(`${k}: access denied`)) : inner.get(k, r)) };
  // Act / Assess
  const opened = await openRepository(refusing, 'another long passphrase', FAST);
  assert.equal(opened.config.id, repo.config.id);
  await opened.close();
  await assert.rejects(openRepository(refusing, PASS, FAST), (e: unknown) => e instanceof AccessDeniedError && e.message.includes(first));
});

test('a wrong passphrase and a missing repository are named, and nothing is written', async () => {
  const store = createMemoryStore();
  const repo = await initRepository(store, PASS, FAST);
  await repo.close();
  const before = store.objects.size;

  await assert.rejects(openRepository(store, 'not the passphrase'), (e: Error) => e instanceof WrongPassphraseError && /does not open the repository/.test(e.message));
  await assert.rejects(openRepository(createMemoryStore(), PASS), (e: Error) => e instanceof NotFoundError && /no Tender repository/.test(e.message));
  assert.equal(store.objects.size, before);
});

// Two ways to read packs: whole ranges (S3, Blob), or block by block into the codec slots
// through a reader (a local folder). Damage must look the same to both.
const READS = [
  { readers: false, how: 'read in ranges' },
  { readers: true, how: 'read block by block' },
] as const;

for (const { readers, how } of READS) test(`a damaged pack is named by restore and by verify --read-data (${how})`, async () => {
  const dir = await tempDir();
  const image = makeImage(16, 6);
  await writeFile(join(dir, 'disk.img'), image);
  const store = createMemoryStore(undefined, { readers });
  const repo = await initRepository(store, PASS, FAST);
  const r = await backupImage(repo, join(dir, 'disk.img'));
  assert.equal((await verifyRepository(repo, { readData: true })).ok, true);

  const packKey = [...store.objects.keys()].find((k) => k.startsWith('data/'))!;
  store.objects.get(packKey)!.data[100] ^= 0xff;

  await assert.rejects(restoreToBuffer(repo, r.restorePointId, 'root', dir), (e: Error) => e instanceof CorruptObjectError && e.message.includes(packKey));
  const structural = await verifyRepository(repo);
  assert.equal(structural.ok, true, 'structure alone cannot see a flipped byte inside a blob');
  const report = await verifyRepository(repo, { readData: true });
  assert.equal(report.ok, false);
  assert.ok(report.problems.some((p) => p.object === packKey && /authenticate/.test(p.message)));
  // No partial file is left under the target name.
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('restore-')), []);
  await repo.close();
});

for (const phase of ['pack upload', 'index write', 'manifest write'] as const) {
  test(`a crash during ${phase} leaves a valid repository and the next run reuses what was uploaded`, async () => {
    const dir = await tempDir();
    const image = makeImage(48, 7);
    await writeFile(join(dir, 'disk.img'), image);
    const inner = createMemoryStore();
    const prefix = phase === 'pack upload' ? 'data/' : phase === 'index write' ? 'index/' : 'snapshots/';
    let seen = 0;
    const crashAfter = phase === 'pack upload' ? 1 : 0;
    const faulty: ObjectStore = withFaults(inner, ({ method, key }) => {
      if ((method === 'put' || method === 'putIfAbsent') && key.startsWith(prefix) && seen++ === crashAfter) return { method, error: 'crash' };
      return undefined;
    });
    const repo = await initRepository(faulty, PASS, FAST);
    await assert.rejects(backupImage(repo, join(dir, 'disk.img')), SimulatedCrashError);
    await repo.close();

    // Another process opens the repository afterwards: a worker as backups do (listing the packs
    // while the key is unwrapped), or a person with tender-worker.
    const again = await (phase === 'manifest write' ? openRepository : openOrInitRepository)(inner, PASS, { threads: 2 });
    const check = await verifyRepository(again, { readData: true });
    assert.equal(check.ok, true, JSON.stringify(check.problems));
    assert.equal(check.restorePoints, 0, 'no restore point exists until its manifest is written');
    const uploadedBefore = [...inner.objects.keys()].filter((k) => k.startsWith('data/')).length;
    const r = await backupImage(again, join(dir, 'disk.img'));
    if (uploadedBefore > 0) assert.ok(r.disks[0]!.blocksNew < 36, `reused uploaded packs (stored ${r.disks[0]!.blocksNew} of 36 new blocks again)`);
    assert.equal(sha(await restoreToBuffer(again, r.restorePointId, 'root', dir)), sha(image));
    assert.equal((await verifyRepository(again, { readData: true })).ok, true);
    await again.close();
  });
}

test('prune frees what forgotten restore points alone used, in two phases, and never what is referenced', async () => {
  const dir = await tempDir();
  let now = new Date('2026-01-01T00:00:00Z');
  const clock = () => now;
  const store = createMemoryStore(clock);
  const repo = await initRepository(store, PASS, { ...FAST, now: clock });
  const a = makeImage(24, 8);
  const b = makeImage(24, 9);
  await writeFile(join(dir, 'a.img'), a);
  await writeFile(join(dir, 'b.img'), b);
  const ra = await backupImage(repo, join(dir, 'a.img'), { vmId: 'vm-a' });
  const rb = await backupImage(repo, join(dir, 'b.img'), { vmId: 'vm-b' });
  const packsBefore = [...store.objects.keys()].filter((k) => k.startsWith('data/')).length;

  await forgetRestorePoints(repo, [ra.restorePointId]);
  const day = 24 * 3600 * 1000;
  now = new Date(now.getTime() + 2 * day);
  const first = await pruneRepository(repo);
  assert.equal(first.packsDeleted, 0, 'the first prune only marks');
  assert.ok(first.packsMarked > 0);

  now = new Date(now.getTime() + 2 * day);
  const second = await pruneRepository(repo);
  assert.equal(second.packsDeleted, first.packsMarked);
  assert.ok([...store.objects.keys()].filter((k) => k.startsWith('data/')).length < packsBefore);

  assert.equal(sha(await restoreToBuffer(repo, rb.restorePointId, 'root', dir)), sha(b));
  const reopened = await openRepository(store, PASS, { threads: 2 });
  assert.equal((await verifyRepository(reopened, { readData: true })).ok, true);
  await reopened.close();
  await repo.close();
});

/** An image of random (incompressible) blocks; with `base`, every `keepEvery`-th block is base's, unchanged. */
function randomImage(blocks: number, base?: Buffer, keepEvery = 0): Buffer {
  const out = randomBytes(blocks * BS);
  if (base) for (let i = 0; i < blocks; i += keepEvery) base.copy(out, i * BS, i * BS, (i + 1) * BS);
  return out;
}
const dataBytes = (store: ReturnType<typeof createMemoryStore>) => [...store.objects].filter(([k]) => k.startsWith('data/')).reduce((n, [, o]) => n + o.data.length, 0);

const DAY = 24 * 3600 * 1000;

/** v1, 24 random blocks, and v2, which keeps every sixth of them: forgetting v1 leaves each of its packs (about four blocks each) needed for one block at most. */
async function twoVersions() {
  const dir = await tempDir();
  const v1 = randomImage(24);
  const v2 = randomImage(24, v1, 6);
  await writeFile(join(dir, 'v1.img'), v1);
  await writeFile(join(dir, 'v2.img'), v2);
  return { dir, v2 };
}

/** A repository holding v2's restore point, v1's forgotten, two days on: v1's packs are due for a repack. */
async function withV1Forgotten(dir: string) {
  let now = new Date('2026-01-01T00:00:00Z');
  const clock = { now: () => now, advance: (ms: number) => (now = new Date(now.getTime() + ms)) };
  const store = createMemoryStore(clock.now);
  const repo = await initRepository(store, PASS, { ...FAST, now: clock.now });
  const r1 = await backupImage(repo, join(dir, 'v1.img'));
  const r2 = await backupImage(repo, join(dir, 'v2.img'));
  await forgetRestorePoints(repo, [r1.restorePointId]);
  clock.advance(2 * DAY);
  return { store, repo, clock, r2 };
}

test('prune repacks packs that restore points need only a little of: the space of forgotten blocks comes back, the rest restores exactly', async () => {
  // Prepare
  const { dir, v2 } = await twoVersions();
  const run = async (repackBelow: number | undefined) => {
    const r = await withV1Forgotten(dir);
    const first = await pruneRepository(r.repo, repackBelow === undefined ? {} : { repackBelow });
    r.clock.advance(2 * DAY);
    const second = await pruneRepository(r.repo, repackBelow === undefined ? {} : { repackBelow });
    return { ...r, first, second };
  };
  // What v2 alone takes in a repository of its own.
  const alone = createMemoryStore();
  const aloneRepo = await initRepository(alone, PASS, FAST);
  await backupImage(aloneRepo, join(dir, 'v2.img'));
  await aloneRepo.close();

  // Act
  const repacking = await run(undefined);
  const keeping = await run(0);

  // Assess: with the default, the old packs were repacked at the first prune and freed at the second.
  assert.ok(repacking.first.packsRepacked > 0, 'v1\'s packs were repacked');
  assert.ok(repacking.first.bytesRepacked >= 4 * BS && repacking.first.bytesRepacked < 6 * BS, `copied ${repacking.first.bytesRepacked} bytes for the 4 blocks v2 kept`);
  assert.equal(repacking.first.packsDeleted, 0, 'the first prune only marks');
  assert.ok(repacking.second.packsDeleted >= repacking.first.packsRepacked);
  assert.ok(dataBytes(repacking.store) < dataBytes(alone) * 1.1, `${dataBytes(repacking.store)} bytes of packs left, v2 alone takes ${dataBytes(alone)}`);
  assert.equal(sha(await restoreToBuffer(repacking.repo, repacking.r2.restorePointId, 'root', dir)), sha(v2));
  const reopened = await openRepository(repacking.store, PASS, { threads: 2 });
  assert.equal((await verifyRepository(reopened, { readData: true })).ok, true);
  assert.equal(sha(await restoreToBuffer(reopened, repacking.r2.restorePointId, 'root', dir)), sha(v2), 'from a fresh open (the index on disk)');
  await reopened.close();
  // …and without repacking, v1's packs stay for the 4 blocks (each keeps its three others).
  assert.equal(keeping.first.packsRepacked, 0);
  assert.ok(dataBytes(keeping.store) - dataBytes(repacking.store) >= 6 * BS, `${dataBytes(keeping.store)} bytes of packs left without repacking, ${dataBytes(repacking.store)} with`);
  await Promise.all([repacking.repo.close(), keeping.repo.close()]);
});

test('a prune killed at any write of its repack leaves a valid repository; later prunes finish the job and the newer disk restores exactly', async () => {
  // Prepare
  const { dir, v2 } = await twoVersions();
  const isWrite = (method: string) => method === 'put' || method === 'putIfAbsent' || method === 'delete';
  // How many writes a prune that is not killed makes (its lock's included).
  const clean = await withV1Forgotten(dir);
  await clean.repo.close();
  let writes = 0;
  const counting = withFaults(clean.store, ({ method }) => (isWrite(method) && writes++ < 0 ? { method, error: 'crash' } : undefined));
  const counted = await openRepository(counting, PASS, { ...FAST, now: clean.clock.now });
  assert.ok((await pruneRepository(counted)).packsRepacked > 0);
  await counted.close();
  assert.ok(writes >= 4, `${writes} writes`);

  for (let crashAt = 0; crashAt < writes; crashAt++) {
    const { store, repo: setUpRepo, clock, r2 } = await withV1Forgotten(dir);
    await setUpRepo.close();
    let seen = 0;
    const faulty = withFaults(store, ({ method }) => (isWrite(method) && seen++ === crashAt ? { method, error: 'crash' } : undefined));
    const repo = await openRepository(faulty, PASS, { ...FAST, now: clock.now });
    // Act
    await assert.rejects(pruneRepository(repo), SimulatedCrashError, `killed at write ${crashAt}`);
    await repo.close();
    // Assess: valid at once, and after the prunes that follow (the crashed one's lock has expired by then)
    const after = await openRepository(store, PASS, { ...FAST, now: clock.now });
    const check = await verifyRepository(after, { readData: true });
    assert.equal(check.ok, true, `killed at write ${crashAt}: ${JSON.stringify(check.problems)}`);
    for (let i = 0; i < 3; i++) {
      clock.advance(2 * DAY);
      await pruneRepository(after);
    }
    assert.equal(sha(await restoreToBuffer(after, r2.restorePointId, 'root', dir)), sha(v2), `killed at write ${crashAt}`);
    assert.equal((await verifyRepository(after, { readData: true })).ok, true, `killed at write ${crashAt}, after the prunes`);
    assert.ok(dataBytes(store) < 24 * BS * 1.4, `killed at write ${crashAt}: ${dataBytes(store)} bytes of packs for a 24-block disk`);
    await after.close();
  }
});

test('a pack due for a repack with a block that does not authenticate is left whole, and the rest of the repository is still repacked', async () => {
  // Prepare
  const { dir } = await twoVersions();
  const { store, repo, clock, r2 } = await withV1Forgotten(dir);
  // The pack holding v2's first block (one v1 wrote): flip a byte of that block's blob.
  const map = await repo.readBlockMap((await repo.readManifest(r2.restorePointId)).disks[0]!.map, 24);
  const loc = repo.index.get(mapGet(map, 0))!;
  const damagedPack = packKey(loc.pack);
  store.objects.get(damagedPack)!.data[loc.offset + 20]! ^= 0xff;
  // Act
  const first = await pruneRepository(repo);
  clock.advance(2 * DAY);
  await pruneRepository(repo);
  // Assess
  assert.equal(first.packsNotRepacked, 1);
  assert.ok(first.packsRepacked >= 1, 'the other sparse packs were repacked');
  assert.ok(store.objects.has(damagedPack), 'the damaged pack is left as it is, for verify to name');
  await repo.close();
});

test('a prune capped in what it copies repacks the sparsest packs first, leaves the others whole for later prunes, and those finish the job', async () => {
  // Prepare: v1's packs due for a repack each hold one block v2 needs.
  const { dir, v2 } = await twoVersions();
  const { store, repo, clock, r2 } = await withV1Forgotten(dir);
  const uncapped = await pruneRepository(repo, { dryRun: true });
  const capped = { maxRepackBytes: Math.floor(1.5 * BS) };
  // Act
  const first = await pruneRepository(repo, capped);
  const afterFirst = dataBytes(store);
  const later = [];
  for (let i = 0; i < 8; i++) {
    clock.advance(2 * DAY);
    const r = await pruneRepository(repo, capped);
    later.push(r);
    if (r.packsLeftForLater === 0 && r.packsRepacked === 0 && r.packsDeleted === 0) break;
  }
  // Assess: one pack repacked per prune (the cap holds one block, and a pack holding two of v2's
  // blocks is taken alone, or it would never be repacked)…
  assert.ok(uncapped.packsRepacked >= 2, `${uncapped.packsRepacked} packs due for a repack`);
  assert.equal(first.packsRepacked, 1);
  assert.ok(first.bytesRepacked > 0 && first.bytesRepacked < uncapped.bytesRepacked, `copied ${first.bytesRepacked} of ${uncapped.bytesRepacked} bytes`);
  assert.equal(first.packsLeftForLater, uncapped.packsRepacked - 1);
  for (const r of later) assert.ok(r.packsRepacked <= 1, `${r.packsRepacked} packs repacked by one prune`);
  // …and the prunes after it repacked the rest and freed the old packs.
  assert.equal(later.reduce((n, r) => n + r.packsRepacked, first.packsRepacked), uncapped.packsRepacked);
  assert.equal(later.at(-1)!.packsLeftForLater, 0);
  assert.ok(dataBytes(store) < afterFirst, `${dataBytes(store)} bytes of packs at the end, ${afterFirst} after the first prune`);
  assert.ok(dataBytes(store) < 24 * BS * 1.1, `${dataBytes(store)} bytes of packs left for a 24-block disk`);
  assert.equal(sha(await restoreToBuffer(repo, r2.restorePointId, 'root', dir)), sha(v2));
  const reopened = await openRepository(store, PASS, { threads: 2 });
  assert.equal((await verifyRepository(reopened, { readData: true })).ok, true);
  assert.equal(sha(await restoreToBuffer(reopened, r2.restorePointId, 'root', dir)), sha(v2), 'from a fresh open (the index on disk)');
  await Promise.all([repo.close(), reopened.close()]);
});

test('a prune with a cap of 0 copies nothing and deletes no pack a restore point needs', async () => {
  const { dir, v2 } = await twoVersions();
  const { store, repo, clock, r2 } = await withV1Forgotten(dir);
  const before = dataBytes(store);
  const first = await pruneRepository(repo, { maxRepackBytes: 0 });
  clock.advance(2 * DAY);
  const second = await pruneRepository(repo, { maxRepackBytes: 0 });
  assert.equal(first.packsRepacked + second.packsRepacked, 0);
  assert.ok(first.packsLeftForLater >= 2 && second.packsLeftForLater === first.packsLeftForLater);
  // Only the packs no restore point needs went; the sparse ones are all still there.
  assert.equal(second.packsDeleted, first.packsMarked);
  assert.equal(dataBytes(store), before - second.bytesFreed);
  assert.equal(sha(await restoreToBuffer(repo, r2.restorePointId, 'root', dir)), sha(v2));
  await repo.close();
});

test('the pipelines\' prune (RestorePoints.prune): prunes with the policy\'s settings, and skips — saying why — when another prune holds the lock or there is no repository', async () => {
  // Prepare: a repository where v1 is forgotten and its packs are long past the margin.
  const { dir, v2 } = await twoVersions();
  const { store, repo, r2 } = await withV1Forgotten(dir);
  await repo.close();
  const empty = createMemoryStore();
  const port = createRestorePointsPort({ openStore: async (url) => (url === 'mem:empty' ? empty : store), secret: async () => PASS });
  const ref = { url: 'mem:repo', key: { passphraseEnv: 'UNUSED' } };
  const settings = { owner: 'run r9 (policy web)', repackBelow: 0.5, maxRepackBytes: 2048 * 1024 * 1024 };
  // Act
  const held = await acquireExclusiveLock(await openRepository(store, PASS, { threads: 1 }), 'a prune on another machine');
  const objectsBefore = [...store.objects.keys()].sort();
  const locked = await port.prune(ref, settings);
  const objectsWhileLocked = [...store.objects.keys()].sort();
  await held.release();
  const capped = await port.prune(ref, { ...settings, maxRepackBytes: 0 });
  const pruned = await port.prune(ref, settings);
  const missing = await port.prune({ ...ref, url: 'mem:empty' }, settings);
  // Assess
  assert.equal(locked.status, 'skipped');
  assert.match(locked.status === 'skipped' ? locked.reason : '', /locked for maintenance by a prune on another machine/);
  assert.deepEqual(objectsWhileLocked, objectsBefore, 'nothing written or deleted while another prune held the lock');
  assert.ok(capped.status === 'pruned' && capped.packsRepacked === 0 && capped.packsLeftForLater > 0 && capped.packsMarked > 0, JSON.stringify(capped));
  assert.ok(pruned.status === 'pruned' && pruned.packsRepacked > 0 && pruned.bytesRepacked > 0 && pruned.packsLeftForLater === 0, JSON.stringify(pruned));
  assert.deepEqual(missing, { status: 'skipped', reason: 'there is no repository at mem:empty yet' });
  assert.equal(store.objects.has('locks/exclusive'), false, 'the lock is released');
  const reopened = await openRepository(store, PASS, { threads: 2 });
  assert.equal(sha(await restoreToBuffer(reopened, r2.restorePointId, 'root', dir)), sha(v2));
  await reopened.close();
});

test('prune keeps young unreferenced packs (a backup may still be writing) and takes an exclusive lock', async () => {
  const dir = await tempDir();
  const store = createMemoryStore();
  const repo = await initRepository(store, PASS, FAST);
  await writeFile(join(dir, 'a.img'), makeImage(16, 10));
  const r = await backupImage(repo, join(dir, 'a.img'));
  await forgetRestorePoints(repo, [r.restorePointId]);

  const report = await pruneRepository(repo);
  assert.equal(report.packsMarked, 0, 'packs younger than the safety margin are not even marked');

  const lock = await acquireExclusiveLock(repo, 'someone else');
  await assert.rejects(pruneRepository(repo), (e: Error) => e instanceof LockedError && /someone else/.test(e.message));
  await lock.release();
  await pruneRepository(repo);
  await repo.close();
});

/** A repository whose only restore point was forgotten and whose packs a first prune has marked. */
async function repoWithMarkedPacks(dir: string, seed: number) {
  const time = { now: new Date('2026-01-01T00:00:00Z') };
  const clock = () => time.now;
  const advance = (ms: number) => {
    time.now = new Date(time.now.getTime() + ms);
  };
  const store = createMemoryStore(clock);
  const repo = await initRepository(store, PASS, { ...FAST, now: clock });
  const image = makeImage(16, seed);
  await writeFile(join(dir, 'a.img'), image);
  const r1 = await backupImage(repo, join(dir, 'a.img'));
  await forgetRestorePoints(repo, [r1.restorePointId]);
  advance(2 * 86400_000);
  const marked = await pruneRepository(repo);
  return { clock, advance, store, repo, image, marked };
}

test('a backup after a prune marked packs stores those blocks again instead of referring to them', async () => {
  const dir = await tempDir();
  const { advance, repo, image, marked } = await repoWithMarkedPacks(dir, 11);
  assert.ok(marked.packsMarked > 0);

  const r2 = await backupImage(repo, join(dir, 'a.img'));
  assert.equal(r2.disks[0]!.blocksNew, 12, 'blocks in marked packs are uploaded again');
  advance(2 * 86400_000);
  await pruneRepository(repo);
  assert.equal(sha(await restoreToBuffer(repo, r2.restorePointId, 'root', dir)), sha(image));
  await repo.close();
});

test('the image sink refuses to overwrite an existing file', async () => {
  const dir = await tempDir();
  const fh = await openFile(join(dir, 'exists.img'), 'w');
  await fh.close();
  await assert.rejects(createImageSink(join(dir, 'exists.img'), BS), /already exists — restore to a new path, or pass --overwrite/);
});

test('a prune that stopped after deleting packs leaves no backup referring to them', async () => {
  const dir = await tempDir();
  const { clock, advance, store: inner, repo, image } = await repoWithMarkedPacks(dir, 12);
  advance(2 * 86400_000);
  await repo.close();

  // The second phase dies after deleting the packs, before replacing the old index files.
  const dying = withFaults(inner, ({ method, key }) => (method === 'delete' && key.startsWith('index/') ? { method, error: 'crash' } : undefined));
  const pruner = await openRepository(dying, PASS, { threads: 1, now: clock });
  await assert.rejects(pruneRepository(pruner), SimulatedCrashError);
  await pruner.close();
  // Its lock is left behind; it expires after an hour.
  advance(2 * 3600_000);

  const next = await openRepository(inner, PASS, { ...FAST, now: clock });
  const r2 = await backupImage(next, join(dir, 'a.img'));
  assert.equal(r2.disks[0]!.blocksNew, 12, 'blocks whose packs are gone are stored again');
  assert.equal(sha(await restoreToBuffer(next, r2.restorePointId, 'root', dir)), sha(image));
  // Another process (tender-worker restore) loads every index file, the old ones naming the
  // deleted packs too: it finds each block in the pack that exists, and verify says what is left.
  const reader = await openRepository(inner, PASS, { threads: 1, now: clock });
  assert.equal(sha(await restoreToBuffer(reader, r2.restorePointId, 'root', dir)), sha(image));
  const unfinished = await verifyRepository(reader, { readData: true });
  assert.equal(unfinished.ok, true, JSON.stringify(unfinished.problems));
  assert.ok(unfinished.unfinishedPrunePacks > 0);
  await reader.close();
  await pruneRepository(next);
  const reopened = await openRepository(inner, PASS, { threads: 1 });
  const report = await verifyRepository(reopened, { readData: true });
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  assert.equal(report.unfinishedPrunePacks, 0, 'the next prune finished the job');
  await Promise.all([next.close(), reopened.close()]);
});

test('loading the index, a block in a marked pack and in another is found in the other, whichever index file comes first', async () => {
  const repo = await initRepository(createMemoryStore(), PASS, FAST);
  const id = 'ab'.repeat(32);
  const file = (pack: string, offset: number) => ({ version: 1 as const, packs: [{ id: pack, size: 100, blobs: [[id, offset, 10, BS] as [string, number, number, number]] }] });
  repo.marked.add('d'.repeat(64));
  for (const order of [['d', 'e'], ['e', 'd']]) {
    repo.index.clear();
    for (const p of order) repo.addIndexFile(file(p.repeat(64), p === 'd' ? 0 : 50));
    assert.equal(repo.index.get(id)?.pack, 'e'.repeat(64), `index files in the order ${order}`);
  }
  // Only in a marked pack: still found there (a restore of an older point may need it).
  repo.index.clear();
  repo.addIndexFile(file('d'.repeat(64), 0));
  assert.equal(repo.index.get(id)?.pack, 'd'.repeat(64));
  await repo.close();
});

test('an incremental whose parent lost blocks reads them again instead of inheriting the hole', async () => {
  const dir = await tempDir();
  const v1 = makeImage(24, 13);
  const v2 = Buffer.from(v1);
  randomBytes(BS).copy(v2, 2 * BS);
  await writeFile(join(dir, 'v1.img'), v1);
  await writeFile(join(dir, 'v2.img'), v2);
  await writeBlockDigestMap(join(dir, 'v1.img'), BS);
  await writeBlockDigestMap(join(dir, 'v2.img'), BS);
  const store = createMemoryStore();
  const repo = await initRepository(store, PASS, FAST);
  await backupImage(repo, join(dir, 'v1.img'));
  await repo.close();
  const lost = [...store.objects.keys()].find((k) => k.startsWith('data/'))!;
  store.objects.delete(lost);

  const again = await openRepository(store, PASS, FAST);
  const inc = await backupImage(again, join(dir, 'v2.img'), { parent: join(dir, 'v1.img') });
  assert.equal(inc.disks[0]!.incremental, true);
  assert.match(inc.disks[0]!.reason ?? '', /no longer in the repository and were read again/);
  assert.equal(sha(await restoreToBuffer(again, inc.restorePointId, 'root', dir)), sha(v2));
  await again.close();
});

test('a block digest map older than its image is not trusted, and an image is never its own parent', async () => {
  const dir = await tempDir();
  const img = join(dir, 'disk.img');
  await writeFile(img, makeImage(8, 14));
  await writeBlockDigestMap(img, BS);
  const parentCopy = join(dir, 'parent.img');
  await writeFile(parentCopy, makeImage(8, 14));
  await writeBlockDigestMap(parentCopy, BS);
  // The parent image changes after its map was written: the map no longer describes it.
  await new Promise((r) => setTimeout(r, 20));
  await writeFile(parentCopy, makeImage(8, 15));

  const src = await openImageSource(img, { blockSize: BS });
  const stale = await src.changedBlocks(parentCopy);
  assert.equal(stale.incremental, false);
  assert.match(stale.reason ?? '', /no up-to-date block digest map/);
  const self = await src.changedBlocks(img);
  assert.equal(self.incremental, false);
  assert.match(self.reason ?? '', /the parent snapshot is the image itself/);
  await src.close();
});

test('restoring onto a sink with a base (a parent snapshot) writes the zero blocks too', async () => {
  const dir = await tempDir();
  const image = makeImage(8, 16);
  await writeFile(join(dir, 'disk.img'), image);
  const repo = await initRepository(createMemoryStore(), PASS, FAST);
  const r = await backupImage(repo, join(dir, 'disk.img'));
  const disk = Buffer.alloc(image.length, 0xee); // the base: whatever the parent held
  const sink = {
    blockSize: BS,
    hasBase: true,
    async writeBlock(i: number, data: Uint8Array) {
      disk.set(data, i * BS);
    },
    finish: async () => 'snap-new',
    abort: async () => undefined,
  };
  await restoreDisk(repo, r.restorePointId, 'root', sink);
  assert.equal(sha(disk), sha(image));
  await repo.close();
});

/** A repository with one restore point of a 24-block image, for damage tests. */
async function damaged(dir: string, seed: number, readers = false) {
  // A clock the test can move, for the prune safety margin.
  const time = { now: new Date('2026-01-01T00:00:00Z') };
  const clock = () => time.now;
  const image = makeImage(24, seed);
  await writeFile(join(dir, 'disk.img'), image);
  const store = createMemoryStore(clock, { readers });
  const repo = await initRepository(store, PASS, { ...FAST, now: clock });
  const r = await backupImage(repo, join(dir, 'disk.img'));
  await repo.close();
  const keys = (prefix: string) => [...store.objects.keys()].filter((k) => k.startsWith(prefix));
  return { image, store, r, keys, time, clock };
}

for (const { readers, how } of READS) for (const damage of ['a truncated pack', 'a missing pack', 'a missing index', 'an index naming a missing pack', 'an index placing blocks where the pack does not'] as const) {
  test(`${damage} is reported by verify, and restore fails loudly instead of returning wrong bytes${damage === 'a missing index' ? ' (or, with every pack there, restores from their headers)' : ''} (${how})`, async () => {
    const dir = await tempDir();
    const { store, r, keys, image } = await damaged(dir, 20, readers);
    const pack = keys('data/')[0]!;
    if (damage === 'a truncated pack') store.objects.get(pack)!.data = store.objects.get(pack)!.data.subarray(0, 1000);
    if (damage === 'a missing pack') store.objects.delete(pack);
    if (damage === 'a missing index') for (const k of keys('index/')) store.objects.delete(k);
    if (damage === 'an index naming a missing pack') {
      // Replace the index with one that puts every block in a pack that does not exist.
      const writer = await openRepository(store, PASS, FAST);
      const files = await writer.readIndexFiles();
      for (const k of keys('index/')) store.objects.delete(k);
      await writer.writeIndex(
        files.flatMap(({ file }) => file.packs).map((p) => ({ id: 'f'.repeat(64), size: p.size, entries: p.blobs.map(([id, offset, length, rawLength]) => ({ id: Buffer.from(id, 'hex'), offset, length, rawLength })) })),
      );
      await writer.close();
    }
    if (damage === 'an index placing blocks where the pack does not') {
      // The same packs, but the first two blocks of the first pack swapped.
      const writer = await openRepository(store, PASS, FAST);
      const packs = (await writer.readIndexFiles()).flatMap(({ file }) => file.packs);
      const [a, b] = packs[0]!.blobs;
      packs[0]!.blobs[0] = [a![0], b![1], b![2], b![3]];
      packs[0]!.blobs[1] = [b![0], a![1], a![2], a![3]];
      for (const k of keys('index/')) store.objects.delete(k);
      await writer.writeIndexPacks(packs);
      await writer.close();
    }

    const repo = await openRepository(store, PASS, FAST);
    const report = await verifyRepository(repo, { readData: true });
    assert.equal(report.ok, false, `verify must see ${damage}`);
    assert.ok(report.problems.length > 0);
    if (damage === 'a missing index') {
      // Every pack is still there, and carries its header: restore finds the blocks in them.
      assert.equal(sha(await restoreToBuffer(repo, r.restorePointId, 'root', dir)), sha(image));
      await repo.close();
      return;
    }
    if (damage === 'an index placing blocks where the pack does not') {
      assert.equal(report.problems.filter((p) => /which the pack's header does not/.test(p.message)).length, 2, JSON.stringify(report.problems));
    }
    await assert.rejects(restoreToBuffer(repo, r.restorePointId, 'root', dir), CorruptObjectError);
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('restore-')), [], 'no restored file is left behind');
    await repo.close();
  });
}

test('crashes at random points of a backup never leave a repository that fails verify', async () => {
  const dir = await tempDir();
  const image = makeImage(40, 21);
  await writeFile(join(dir, 'disk.img'), image);
  // A seeded sequence, so a failure can be replayed.
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let round = 0; round < 8; round++) {
    const inner = createMemoryStore();
    await (await initRepository(inner, PASS, FAST)).close();
    const crashAt = 1 + Math.floor(random() * 14);
    let writes = 0;
    const faulty = withFaults(inner, ({ method }) => ((method === 'put' || method === 'putIfAbsent') && ++writes === crashAt ? { method, error: 'crash' } : undefined));
    const repo = await openRepository(faulty, PASS, FAST);
    const outcome = await backupImage(repo, join(dir, 'disk.img')).then(
      (res) => res,
      (e) => {
        assert.ok(e instanceof SimulatedCrashError, `round ${round}: ${e}`);
        return undefined;
      },
    );
    await repo.close();

    const after = await openRepository(inner, PASS, FAST);
    const report = await verifyRepository(after, { readData: true });
    assert.equal(report.ok, true, `round ${round}, crash at write ${crashAt}: ${JSON.stringify(report.problems)}`);
    const next = await backupImage(after, join(dir, 'disk.img'));
    assert.equal(sha(await restoreToBuffer(after, next.restorePointId, 'root', dir)), sha(image));
    if (outcome) assert.equal(sha(await restoreToBuffer(after, outcome.restorePointId, 'root', dir)), sha(image));
    await after.close();
  }
});

test('two workers creating the same repository at once both end up in the one that won, even when they may not delete', async () => {
  const inner = createMemoryStore();
  // A worker role with no delete permission, as on AWS.
  const noDelete = { ...inner, delete: async (key: string) => { throw new (await import('../../shared/core/errors.js')).AccessDeniedError(`may not delete ${key}`); } };
  const [a, b] = await Promise.all([initRepository(noDelete, PASS, FAST), initRepository(noDelete, PASS, FAST)].map((p) => p.catch((e) => e)));
  // One may have found the other's config already there ("already holds a repository"): open it like a worker would.
  const repos = await Promise.all([a, b].map((r) => (r instanceof Error ? openRepository(noDelete, PASS, FAST) : r)));
  assert.equal(repos[0].config.id, repos[1].config.id);
  assert.ok(repos[0].key.encryption.equals(repos[1].key.encryption));
  await Promise.all(repos.map((r) => r.close()));
});

test('two first backups racing to create the repository (codec threads already started as each wraps its key) both land in the one that won', async () => {
  // Prepare
  const dir = await tempDir();
  const images = [makeImage(12, 31), makeImage(12, 32)];
  await Promise.all(images.map((img, k) => writeFile(join(dir, `disk${k}.img`), img)));
  const store = createMemoryStore();
  let configsWritten = 0;
  const counting: ObjectStore = { ...store, putIfAbsent: async (k, b) => ((k === 'config' ? configsWritten++ : 0), store.putIfAbsent(k, b)) };
  // The process's threads (Linux): the loser's codec threads must end, not idle on.
  const threadCount = async () => (await readdir('/proc/self/task').catch(() => [])).length;
  const threadsBefore = await threadCount();
  // Act
  const repos = await Promise.all([0, 1].map(() => openOrInitRepository(counting, PASS, FAST)));
  const results = await Promise.all(repos.map((repo, k) => backupImage(repo, join(dir, `disk${k}.img`), { vmId: `vm-${k}` })));
  // Assess
  assert.equal(configsWritten, 2, 'both tried to create it: the race this test is about happened');
  assert.equal(repos[0]!.config.id, repos[1]!.config.id);
  await Promise.all(repos.map((r) => r.close()));
  for (let i = 0; i < 100 && (await threadCount()) > threadsBefore; i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok((await threadCount()) <= threadsBefore, `${(await threadCount()) - threadsBefore} more threads than before the backups`);
  const reader = await openRepository(store, PASS, FAST);
  for (const [k, r] of results.entries()) assert.equal(sha(await restoreToBuffer(reader, r.restorePointId, 'root', dir)), sha(images[k]!), `disk ${k}`);
  await reader.close();
});

test('holes in a sparse image are not read when the filesystem can map them, and the restore is still exact', async () => {
  const dir = await tempDir();
  // 64 blocks, data in blocks 3, 10–11 and 40 only; the rest are holes.
  const path = join(dir, 'sparse.img');
  const fh = await openFile(path, 'w');
  await fh.truncate(64 * BS);
  const data = new Map<number, Buffer>([3, 10, 11, 40].map((i) => [i, randomBytes(BS)]));
  for (const [i, b] of data) await fh.write(b, 0, b.length, i * BS);
  await fh.sync();
  await fh.close();
  const image = await readFile(path);

  const source = await openImageSource(path, { blockSize: BS });
  const allocated = await source.allocatedBlocks();
  await source.close();
  const mapped = allocated.length < 64;
  if (mapped) assert.deepEqual(allocated, [3, 10, 11, 40], 'exactly the blocks with data');
  else assert.equal(allocated.length, 64, 'without a block map of the file, every block is read');

  const repo = await initRepository(createMemoryStore(), PASS, FAST);
  const r = await backupImage(repo, path);
  assert.equal(r.disks[0]!.blocksRead, mapped ? 4 : 64);
  assert.equal(r.disks[0]!.blocksNew, 4);
  assert.equal(sha(await restoreToBuffer(repo, r.restorePointId, 'root', dir)), sha(image));
  await repo.close();
});

test('without filefrag every block is read (never a guess about where the data is)', async () => {
  const dir = await tempDir();
  const savedPath = process.env.PATH;
  try {
    await writeFile(join(dir, 'disk.img'), makeImage(8, 22));
    process.env.PATH = '/nonexistent';
    const source = await openImageSource(join(dir, 'disk.img'), { blockSize: BS });
    assert.equal((await source.allocatedBlocks()).length, 8);
    await source.close();
  } finally {
    process.env.PATH = savedPath;
  }
});

test('a repository made with a bare zstd level (before tuned parameters existed) still backs up and restores, and a new one records its parameters', async () => {
  const dir = await tempDir();
  const image = makeImage(16, 23);
  await writeFile(join(dir, 'disk.img'), image);
  const older = await initRepository(createMemoryStore(), PASS, { ...FAST, compressionLevel: 3 });
  const newer = await initRepository(createMemoryStore(), PASS, FAST);

  assert.deepEqual(older.config.compression, { codec: 'zstd', level: 3 });
  assert.deepEqual(newer.config.compression, { codec: 'zstd', level: 2, params: { hashLog: 15, minMatch: 5 } });
  for (const repo of [older, newer]) {
    const r = await backupImage(repo, join(dir, 'disk.img'));
    assert.ok(r.disks[0]!.bytesStored < r.disks[0]!.bytesRead / 2, 'the text blocks are compressed');
    assert.equal(sha(await restoreToBuffer(repo, r.restorePointId, 'root', dir)), sha(image));
    await repo.close();
  }
});

test('format 1 repositories (HMAC-SHA-256 block IDs) still back up, dedup, restore and verify; new ones are format 2 with keyed BLAKE3 IDs; an unknown ID function is refused by name', async () => {
  // Prepare
  const dir = await tempDir();
  const image = makeImage(16, 24);
  await writeFile(join(dir, 'disk.img'), image);
  const older = await initRepository(createMemoryStore(), PASS, { ...FAST, blockId: 'hmac-sha256' });
  const newer = await initRepository(createMemoryStore(), PASS, FAST);
  assert.equal(older.config.version, 1);
  assert.equal(older.config.blockId, undefined, 'format 1 configs have no blockId field');
  assert.equal(newer.config.version, 2);
  assert.equal(newer.config.blockId, 'blake3');
  for (const repo of [older, newer]) {
    // Act
    const first = await backupImage(repo, join(dir, 'disk.img'));
    const second = await backupImage(repo, join(dir, 'disk.img'));
    // Assess: each stored block is indexed under the ID its format's function gives (computed
    // here, independently of the codec threads); the second run finds every block by its ID;
    // content checks recompute the same IDs.
    const idOf = (b: Buffer) => (repo.config.blockId === 'blake3' ? Blake3Hasher.newKeyed(repo.key.id).update(b).digestBuffer() : createHmac('sha256', repo.key.id).update(b).digest());
    let dataBlocks = 0;
    for (let i = 0; i < 16; i++) {
      const b = image.subarray(i * BS, (i + 1) * BS);
      if (b.every((x) => x === 0)) continue;
      dataBlocks++;
      assert.ok(repo.index.has(idOf(b)), `block ${i} is indexed under its ${repo.config.blockId ?? 'hmac-sha256'} ID`);
    }
    assert.ok(dataBlocks > 0);
    assert.ok(first.disks[0]!.blocksNew > 0);
    assert.equal(second.disks[0]!.blocksNew, 0, `${repo.config.blockId ?? 'hmac-sha256'}: every block deduplicated`);
    assert.equal(sha(await restoreToBuffer(repo, second.restorePointId, 'root', dir)), sha(image));
    const report = await verifyRepository(repo, { readData: true });
    assert.equal(report.ok, true, JSON.stringify(report.problems));
    assert.ok(report.blobsChecked > 0);
    await repo.close();
  }
  // A config naming a function this build does not know (from a newer tender-worker) is refused.
  const store = createMemoryStore();
  const made = await initRepository(store, PASS, FAST);
  const cfg = { ...made.config, blockId: 'blake9' };
  await store.put('config', seal(made.key.encryption, Buffer.from(JSON.stringify(cfg)), aadFor('config', 'repository')));
  await made.close();
  await assert.rejects(openRepository(store, PASS, FAST), /makes block IDs with "blake9", which this tender-worker does not know — upgrade it/);
  // Nor is a config that mixes the formats: version 2 without a function, version 1 with one.
  for (const mixed of [{ ...made.config, blockId: undefined }, { ...made.config, version: 1 }]) {
    await store.put('config', seal(made.key.encryption, Buffer.from(JSON.stringify(mixed)), aadFor('config', 'repository')));
    await assert.rejects(openRepository(store, PASS, FAST), /config (that names no block ID function|that names a block ID function \(blake3\), which format 1 does not have): it was not written by tender-worker/);
  }
});

/** Records every call made on a store, as "method key" (for list, the prefix). */
function recordingStore(inner: ObjectStore, calls: string[]): ObjectStore {
  return {
    location: inner.location,
    put: (k, b) => (calls.push(`put ${k}`), inner.put(k, b)),
    putIfAbsent: (k, b) => (calls.push(`putIfAbsent ${k}`), inner.putIfAbsent(k, b)),
    get: (k, r) => (calls.push(`get ${k}`), inner.get(k, r)),
    stat: (k) => (calls.push(`stat ${k}`), inner.stat(k)),
    delete: (k) => (calls.push(`delete ${k}`), inner.delete(k)),
    list: (p) => (calls.push(`list ${p}`), inner.list(p)),
  };
}

test('a backup fetches what it reads first while its key unwraps, and still sees marks a prune makes while it runs', async () => {
  const dir = await tempDir();
  const time = { now: new Date('2026-01-01T00:00:00Z') };
  const clock = () => time.now;
  const inner = createMemoryStore(clock);
  const setup = await initRepository(inner, PASS, { ...FAST, now: clock });
  await writeFile(join(dir, 'a.img'), makeImage(16, 21));
  await writeFile(join(dir, 'b.img'), makeImage(16, 22));
  await backupImage(setup, join(dir, 'b.img'), { vmId: 'vm-b' });
  const forgotten = await backupImage(setup, join(dir, 'a.img'));
  await forgetRestorePoints(setup, [forgotten.restorePointId]); // its packs: unreferenced, not marked yet
  // A cloud key whose unwrap takes a while, as a KMS call does; it notes what the store had been asked by then.
  let askedBeforeKey: string[] = [];
  const calls: string[] = [];
  const kms = {
    provider: 'aws-kms' as const,
    keyId: 'arn:aws:kms:eu-west-1:111122223333:key/test',
    wrap: async (master: Buffer) => master.toString('base64'),
    unwrap: async (wrapped: string) => {
      await new Promise((r) => setTimeout(r, 50));
      askedBeforeKey = [...calls];
      return Buffer.from(wrapped, 'base64');
    },
  };
  await addKey(setup, kms);
  await setup.close();
  time.now = new Date(time.now.getTime() + 2 * 86400_000);

  const repo = await openOrInitRepository(recordingStore(inner, calls), kms, { ...FAST, now: clock, incremental: true });
  for (const prefix of ['index/', 'deletions/', 'snapshots/']) assert.ok(askedBeforeKey.includes(`list ${prefix}`), `${prefix} is listed while the key unwraps`);
  assert.ok(askedBeforeKey.some((c) => c.startsWith('get index/')), 'index files are read while the key unwraps');
  assert.ok(askedBeforeKey.some((c) => c.startsWith('get snapshots/')), 'restore points are read while the key unwraps');
  assert.ok(askedBeforeKey.includes('list data/'), 'the packs are listed while the key unwraps');
  // The key records come before any of that: nothing queued ahead of them delays the unwrap.
  const lastKeyRead = Math.max(...askedBeforeKey.flatMap((c, i) => (c.startsWith('get keys/') ? [i] : [])));
  const firstPrefetch = askedBeforeKey.findIndex((c) => /^(list|get) (index|deletions|snapshots|data)\//.test(c));
  assert.ok(lastKeyRead >= 0 && lastKeyRead < firstPrefetch, `key records read first: ${askedBeforeKey.join(', ')}`);
  calls.length = 0;
  assert.equal((await readAllManifests(repo)).length, 1);
  assert.deepEqual(calls, [], 'the restore points fetched during the open are used, not read again');

  // A prune marks the forgotten restore point's packs while the backup runs; the backup
  // deduplicated against them, so it must not write a restore point naming them.
  const source = await openImageSource(join(dir, 'a.img'), { blockSize: BS });
  let pruned = false;
  const pruning: typeof source = {
    ...source,
    readBlockInto: async (i, target) => {
      if (!pruned) {
        pruned = true;
        const other = await openRepository(inner, PASS, { ...FAST, now: clock });
        assert.ok((await pruneRepository(other)).packsMarked > 0);
        await other.close();
      }
      return source.readBlockInto!(i, target);
    },
  };
  await assert.rejects(
    backupVm(repo, { runId: 'r', policy: 'test', vm: { vmId: 'vm-1', name: 'vm one', tags: {} }, tags: {}, snapshotSetId: 's', disks: [{ diskId: 'root', source: pruning }] }),
    /a prune marked packs this backup refers to while it ran/,
  );
  await source.close();
  assert.equal((await listRestorePoints(repo)).length, 1, 'no restore point was written');
  await repo.close();
});

test('what an open fetched and its backup did not read is dropped: later reads see restore points written since', async () => {
  const dir = await tempDir();
  const store = createMemoryStore();
  const setup = await initRepository(store, PASS, FAST);
  await writeFile(join(dir, 'a.img'), makeImage(8, 31));
  await backupImage(setup, join(dir, 'a.img'), { vmId: 'vm-a' });
  // Opened for an incremental (restore points fetched as it opens), but the run finds no parent to read.
  const repo = await openOrInitRepository(store, PASS, { ...FAST, incremental: true });
  await backupImage(repo, join(dir, 'a.img'), { vmId: 'vm-b' });
  await backupImage(setup, join(dir, 'a.img'), { vmId: 'vm-c' }); // another writer, meanwhile
  assert.deepEqual((await listRestorePoints(repo)).map((p) => p.vmId).sort(), ['vm-a', 'vm-b', 'vm-c']);
  await repo.close();
  await setup.close();
});

test('index files name a bounded number of blocks: a large index is split over several files and every block is still found', async () => {
  const dir = await tempDir();
  const store = createMemoryStore();
  const repo = await initRepository(store, PASS, FAST);
  const image = makeImage(64, 41);
  await writeFile(join(dir, 'a.img'), image);
  const r = await backupImage(repo, join(dir, 'a.img'));
  const packs = (await repo.readIndexFiles()).flatMap(({ file }) => file.packs);
  const blocks = packs.reduce((n, p) => n + p.blobs.length, 0);
  assert.ok(packs.length >= 3, `${packs.length} packs`);

  // Rewrite the index as prune does, with files of at most 5 blocks (the default is 100,000).
  for (const k of [...store.objects.keys()].filter((k) => k.startsWith('index/'))) store.objects.delete(k);
  const keys = await repo.writeIndexPacks(packs, 5);
  assert.ok(keys.length >= 2, `${blocks} blocks in ${keys.length} index files`);
  const reopened = await openRepository(store, PASS, FAST);
  const files = await reopened.readIndexFiles();
  assert.equal(files.length, keys.length);
  // A pack is never split: a file holds more than 5 blocks only when it is one pack.
  for (const { file } of files) assert.ok(file.packs.length === 1 || file.packs.reduce((n, p) => n + p.blobs.length, 0) <= 5);
  assert.equal(files.reduce((n, { file }) => n + file.packs.length, 0), packs.length, 'every pack is in exactly one file');
  assert.equal(reopened.index.size, repo.index.size, 'every block is found again');
  assert.equal((await verifyRepository(reopened)).ok, true);
  assert.equal(sha(await restoreToBuffer(reopened, r.restorePointId, 'root', dir)), sha(image));
  await reopened.close();
  await repo.close();
});

test('a damaged index file does not lock the data away: restore works from the packs\' headers, and prune indexes them again and removes it', async () => {
  const dir = await tempDir();
  const { time, clock, image, store, r } = await damaged(dir, 31);
  const indexKey = [...store.objects.keys()].find((k) => k.startsWith('index/'))!;
  store.objects.get(indexKey)!.data[40] ^= 0x01;
  time.now = new Date(time.now.getTime() + 3 * 86400_000);

  const reader = await openRepository(store, PASS, { ...FAST, now: clock });
  assert.equal(sha(await restoreToBuffer(reader, r.restorePointId, 'root', dir)), sha(image), 'restored bit for bit from the packs\' own headers');
  const report = await verifyRepository(reader, { readData: true });
  assert.equal(report.ok, false);
  assert.deepEqual(report.problems.map((p) => p.object), [indexKey]);
  assert.match(report.problems[0]!.message, /restores still work/);
  await reader.close();

  // Prune reads the headers of the packs no readable index names, keeps and indexes them, and
  // only then removes the damaged file: no pack is deleted, nothing is lost.
  const packs = [...store.objects.keys()].filter((k) => k.startsWith('data/')).sort();
  const pruner = await openRepository(store, PASS, { ...FAST, now: clock });
  const pruned = await pruneRepository(pruner);
  assert.equal(pruned.damagedIndexFilesRemoved, 1);
  assert.equal(pruned.packsReindexed, packs.length);
  assert.equal(pruned.packsMarked, 0);
  assert.ok(!store.objects.has(indexKey));
  await pruner.close();
  assert.deepEqual([...store.objects.keys()].filter((k) => k.startsWith('data/')).sort(), packs, 'no pack deleted');
  const after = await openRepository(store, PASS, { ...FAST, now: clock });
  const clean = await verifyRepository(after, { readData: true });
  assert.equal(clean.ok, true, JSON.stringify(clean.problems));
  assert.equal(sha(await restoreToBuffer(after, r.restorePointId, 'root', dir)), sha(image));
  const again = await backupImage(after, join(dir, 'disk.img'));
  assert.equal(again.disks[0]!.blocksNew, 0, 'a backup finds every block where it is');
  await after.close();
});

test('an index file that went missing never lets prune delete packs a restore point needs, however many prunes run', async () => {
  const dir = await tempDir();
  const { time, clock, image, store, r } = await damaged(dir, 34);
  for (const k of [...store.objects.keys()].filter((k) => k.startsWith('index/'))) store.objects.delete(k);
  const packs = [...store.objects.keys()].filter((k) => k.startsWith('data/')).sort();
  for (let round = 0; round < 3; round++) {
    time.now = new Date(time.now.getTime() + 3 * 86400_000);
    const pruner = await openRepository(store, PASS, { ...FAST, now: clock });
    const report = await pruneRepository(pruner);
    assert.equal(report.packsMarked + report.packsDeleted, 0, `round ${round}: ${JSON.stringify(report)}`);
    await pruner.close();
  }
  assert.deepEqual([...store.objects.keys()].filter((k) => k.startsWith('data/')).sort(), packs);
  const reader = await openRepository(store, PASS, { ...FAST, now: clock });
  assert.equal(sha(await restoreToBuffer(reader, r.restorePointId, 'root', dir)), sha(image), 'prune wrote the index again');
  assert.equal((await verifyRepository(reader, { readData: true })).ok, true);
  await reader.close();
});

test('a damaged restore point hides no other: listing and backups skip it and say so; prune stops and says how to go on; forget removes it', async () => {
  const dir = await tempDir();
  const image = makeImage(16, 32);
  await writeFile(join(dir, 'disk.img'), image);
  const store = createMemoryStore();
  const repo = await initRepository(store, PASS, FAST);
  const first = await backupImage(repo, join(dir, 'disk.img'));
  const second = await backupImage(repo, join(dir, 'disk.img'));
  store.objects.get(`snapshots/${first.restorePointId}`)!.data[30] ^= 0x01;

  const damaged: Array<{ object: string; message: string }> = [];
  assert.deepEqual((await listRestorePoints(repo, {}, damaged)).map((p) => p.id), [second.restorePointId]);
  assert.deepEqual(damaged.map((d) => d.object), [`snapshots/${first.restorePointId}`]);
  // A backup looking for a parent still runs (the damaged point cannot be a parent).
  const third = await backupImage(repo, join(dir, 'disk.img'), { parent: join(dir, 'disk.img') });
  assert.ok(third.restorePointId);
  await assert.rejects(pruneRepository(repo), (e: Error) => e instanceof CorruptObjectError && e.message.includes(`tender-worker forget ${first.restorePointId}`));
  assert.deepEqual(await forgetRestorePoints(repo, [first.restorePointId, 'no-such-point']), [first.restorePointId]);
  const none: Array<{ object: string; message: string }> = [];
  assert.equal((await listRestorePoints(repo, {}, none)).length, 2);
  assert.deepEqual(none, []);
  await pruneRepository(repo);
  await repo.close();
});

test('a damaged deletion mark stops backups (they could dedup against a pack about to go) but not restores; prune replaces it', async () => {
  const dir = await tempDir();
  const { clock, advance, store, repo, image } = await repoWithMarkedPacks(dir, 33);
  const kept = await backupImage(repo, join(dir, 'a.img'));
  await repo.close();
  const mark = [...store.objects.keys()].find((k) => k.startsWith('deletions/'))!;
  store.objects.get(mark)!.data[20] ^= 0x01;

  const reader = await openRepository(store, PASS, { ...FAST, now: clock });
  assert.equal(sha(await restoreToBuffer(reader, kept.restorePointId, 'root', dir)), sha(image), 'restore goes on');
  const report = await verifyRepository(reader);
  assert.deepEqual(report.problems.map((p) => p.object), [mark]);
  await assert.rejects(backupImage(reader, join(dir, 'a.img')), (e: Error) => e instanceof CorruptObjectError && e.message.includes(mark) && /run `tender-worker prune`/.test(e.message));
  await reader.close();

  advance(2 * 86400_000);
  const pruner = await openRepository(store, PASS, { ...FAST, now: clock });
  const pruned = await pruneRepository(pruner);
  assert.equal(pruned.damagedMarksReplaced, 1);
  assert.ok(!store.objects.has(mark));
  await pruner.close();
  const next = await openRepository(store, PASS, { ...FAST, now: clock });
  const again = await backupImage(next, join(dir, 'a.img'));
  assert.equal(sha(await restoreToBuffer(next, again.restorePointId, 'root', dir)), sha(image));
  assert.equal((await verifyRepository(next, { readData: true })).ok, true);
  await next.close();
});
