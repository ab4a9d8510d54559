import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BlobSASPermissions,
  BlobServiceClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type ContainerClient,
} from '@azure/storage-blob';
import { startAzurite, type Azurite } from '../../support/azurite.js';
import { createAzureDiskSink } from '../../../worker/sinks/azure-disk.js';
import { openAzureSnapshotSource } from '../../../worker/sources/azure-snapshot.js';
import { AccessDeniedError } from '../../../shared/core/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 512 * KiB;
const retry = { sleep: async () => {}, random: () => 0.5 };

let az: Azurite;
let container: ContainerClient;
let credential: StorageSharedKeyCredential;

before(async () => {
  az = await startAzurite();
  credential = new StorageSharedKeyCredential(az.account, az.accountKey);
  container = BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient('restores');
  await container.create();
});
after(async () => {
  await az?.stop();
});

/** An empty upload disk and its write SAS, as Azure hands them out for an upload. */
async function uploadDisk(name: string, size: number, permissions = 'rw'): Promise<string> {
  await container.getPageBlobClient(name).create(size);
  const sas = generateBlobSASQueryParameters(
    { containerName: container.containerName, blobName: name, permissions: BlobSASPermissions.parse(permissions), expiresOn: new Date(Date.now() + 3600_000) },
    credential,
  ).toString();
  return `${container.getPageBlobClient(name).url}?${sas}`;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) b.writeUInt32LE((seed * 2654435761 + i * 40503) >>> 0, i);
  return b;
}

test('restores blocks into a disk through its write SAS: bytes read back exactly, zero blocks left unallocated', async () => {
  // Prepare: a 6 MiB + 1 KiB disk; a run of 10 contiguous blocks (5 MiB: more than one 4 MiB
  // Put Page), then a zero block, and the short last block.
  const size = 6 * MiB + 1024;
  const sasUrl = await uploadDisk('restore-a', size);
  const image = Buffer.alloc(size);
  const blocks = new Map<number, Buffer>();
  for (let i = 0; i < 10; i++) blocks.set(i, pattern(BS, i));
  blocks.set(10, Buffer.alloc(BS));
  blocks.set(12, pattern(1024, 12));
  for (const [i, data] of blocks) data.copy(image, i * BS);

  // Act
  const sink = await createAzureDiskSink({ sasUrl, concurrency: 3, retry });
  for (const [i, data] of [...blocks].sort((a, b) => a[0] - b[0])) await sink.writeBlock(i, data);
  const ref = await sink.finish();

  // Assess
  const blob = container.getPageBlobClient('restore-a');
  const back = await blob.downloadToBuffer();
  assert.ok(back.equals(image), 'every byte as written, unwritten blocks as zeros');
  const source = await openAzureSnapshotSource({ sasUrl, retry });
  assert.deepEqual(await source.allocatedBlocks(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12], 'the zero block stays sparse');
  assert.equal(ref, blob.url, 'the reference carries no SAS');
});

test('blocks written out of order land in the right place', async () => {
  // Prepare
  const size = 4 * BS;
  const sasUrl = await uploadDisk('restore-b', size);
  const sink = await createAzureDiskSink({ sasUrl, retry });

  // Act
  await sink.writeBlock(3, pattern(BS, 3));
  await sink.writeBlock(0, pattern(BS, 0));
  await sink.writeBlock(1, pattern(BS, 1));
  await sink.finish();

  // Assess
  const back = await container.getPageBlobClient('restore-b').downloadToBuffer();
  assert.ok(back.equals(Buffer.concat([pattern(BS, 0), pattern(BS, 1), Buffer.alloc(BS), pattern(BS, 3)])));
});

test('a block outside the disk is refused before anything is sent', async () => {
  // Prepare
  const sasUrl = await uploadDisk('restore-c', 2 * BS);
  const sink = await createAzureDiskSink({ sasUrl, retry });

  // Act / Assess
  await assert.rejects(sink.writeBlock(2, pattern(BS, 2)), RangeError);
  await sink.abort();
  await assert.rejects(sink.writeBlock(0, pattern(BS, 0)), /after abort/);
});

test('a read-only SAS makes the restore fail with AccessDeniedError, not a silent empty disk', async () => {
  // Prepare
  const sasUrl = await uploadDisk('restore-d', 2 * BS, 'r');
  const sink = await createAzureDiskSink({ sasUrl, retry });

  // Act
  await sink.writeBlock(0, pattern(BS, 0));

  // Assess
  await assert.rejects(sink.finish(), AccessDeniedError);
});

test('the caller may reuse its buffer as soon as writeBlock returns', async () => {
  // Prepare
  const sasUrl = await uploadDisk('restore-e', 10 * BS);
  const sink = await createAzureDiskSink({ sasUrl, concurrency: 2, retry });
  const buffer = Buffer.alloc(BS);

  // Act
  for (let i = 0; i < 10; i++) {
    pattern(BS, i).copy(buffer);
    await sink.writeBlock(i, buffer);
  }
  buffer.fill(0xee);
  await sink.finish();

  // Assess
  const back = await container.getPageBlobClient('restore-e').downloadToBuffer();
  assert.ok(back.equals(Buffer.concat(Array.from({ length: 10 }, (_, i) => pattern(BS, i)))));
});

test('blocks written concurrently, as restore does, each land at their own offset', async () => {
  // Prepare: 64 blocks, every other one written, all calls in flight at once.
  const n = 64;
  const size = n * BS;
  const sasUrl = await uploadDisk('restore-concurrent', size);
  const sink = await createAzureDiskSink({ sasUrl, concurrency: 4, retry });
  const written = Array.from({ length: n }, (_, i) => i).filter((i) => i % 2 === 0 || i % 7 === 0);

  // Act
  await Promise.all(written.map((i) => sink.writeBlock(i, pattern(BS, i + 1))));
  await sink.finish();

  // Assess
  const back = await container.getPageBlobClient('restore-concurrent').downloadToBuffer();
  for (let i = 0; i < n; i++) {
    const expected = written.includes(i) ? pattern(BS, i + 1) : Buffer.alloc(BS);
    assert.ok(back.subarray(i * BS, (i + 1) * BS).equals(expected), `block ${i}`);
  }
});
