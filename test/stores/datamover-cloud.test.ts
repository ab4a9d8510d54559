// The data mover into the cloud stores, against real local servers: a full
// and an incremental backup into s3rver and into Azurite, restored bit for
// bit. Packs come from the backup's page-aligned pack buffers and are large
// enough for S3 multipart and Azure staged blocks, the paths a worker uses.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';
import type { ObjectStore } from '../../shared/ports/object-store.js';
import { createS3Store } from '../../shared/aws/s3-store.js';
import { createBlobStore } from '../../shared/azure/blob-store.js';
import { initRepository, openRepository } from '../../worker/repository.js';
import { backupVm } from '../../worker/backup.js';
import { restoreDisk } from '../../worker/restore.js';
import { verifyRepository } from '../../worker/verify.js';
import { createImageSink, openImageSource, writeBlockDigestMap } from '../../worker/sources/image-file.js';
import { startS3Server, type S3Server } from '../support/s3-server.js';
import { startAzurite, type Azurite } from '../support/azurite.js';

const BS = 512 * 1024;
const PASS = 'a long test passphrase';
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** 80 blocks: 40 MiB of random data (stored raw: two packs past the multipart size), text, zeros. */
function makeImage(): Buffer {
  const out = Buffer.alloc(80 * BS);
  for (let i = 0; i < 80; i++) {
    const block = out.subarray(i * BS, (i + 1) * BS);
    if (i % 8 === 7) continue;
    if (i % 2 === 0) randomBytes(BS).copy(block);
    else block.fill(`block ${i}: text that compresses. `);
  }
  return out;
}

async function roundTrip(store: ObjectStore, dir: string): Promise<void> {
  const v1 = makeImage();
  const v2 = Buffer.from(v1);
  randomBytes(BS).copy(v2, 3 * BS);
  v2.fill('changed ', 10 * BS, 11 * BS);
  await writeFile(join(dir, 'v1.img'), v1);
  await writeFile(join(dir, 'v2.img'), v2);
  await writeBlockDigestMap(join(dir, 'v1.img'), BS);
  await writeBlockDigestMap(join(dir, 'v2.img'), BS);

  const repo = await initRepository(store, PASS, { scrypt: { N: 1024, r: 8, p: 1 }, threads: 2 });
  const backup = async (image: string, parent?: string) => {
    const source = await openImageSource(join(dir, image), { blockSize: BS });
    try {
      return await backupVm(repo, {
        runId: `run-${image}`,
        policy: 'test',
        vm: { vmId: 'vm-1', name: 'vm one', tags: {} },
        tags: {},
        snapshotSetId: `set-${image}`,
        disks: [{ diskId: 'root', source, snapshotRef: join(dir, image), ...(parent ? { parentSnapshotRef: join(dir, parent) } : {}) }],
      });
    } finally {
      await source.close();
    }
  };
  const full = await backup('v1.img');
  const inc = await backup('v2.img', 'v1.img');
  await repo.close();
  assert.equal(inc.disks[0]!.blocksRead, 2, 'the incremental reads the two changed blocks');

  // Another process opens the repository and restores both points.
  const reader = await openRepository(store, PASS, { threads: 2 });
  for (const [id, image] of [[full.restorePointId, v1], [inc.restorePointId, v2]] as const) {
    const target = join(dir, `restored-${id}.img`);
    await restoreDisk(reader, id, 'root', await createImageSink(target, image.length, { blockSize: BS }));
    assert.equal(sha(await readFile(target)), sha(image), `restore point ${id} comes back bit for bit`);
  }
  const report = await verifyRepository(reader, { readData: true });
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  assert.ok(report.packs >= 3, `packs past the multipart size were written (${report.packs} packs)`);
  await reader.close();
}

describe('the data mover into S3 (s3rver) and Azure Blob (Azurite)', () => {
  let s3: S3Server;
  let az: Azurite;
  const dirs: string[] = [];
  const freshDir = async () => {
    const d = await mkdtemp(join(tmpdir(), 'tender-dm-cloud-'));
    dirs.push(d);
    return d;
  };
  before(async () => {
    [s3, az] = await Promise.all([startS3Server(['tender-dm']), startAzurite()]);
  });
  after(async () => {
    await Promise.all([s3?.stop(), az?.stop()]);
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('S3: a full and an incremental backup restore bit for bit, and verify reads every block', async () => {
    await roundTrip(createS3Store({ client: s3.client(), bucket: 'tender-dm', prefix: 'repo' }), await freshDir());
  });

  it('Azure Blob: a full and an incremental backup restore bit for bit, and verify reads every block', async () => {
    const container = BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient('tender-dm');
    await container.create();
    await roundTrip(createBlobStore({ containerClient: container, prefix: 'repo' }), await freshDir());
  });
});
