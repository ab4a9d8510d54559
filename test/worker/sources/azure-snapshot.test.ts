import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  BlobSASPermissions,
  BlobServiceClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type ContainerClient,
} from '@azure/storage-blob';
import { startAzurite, type Azurite } from '../../support/azurite.js';
import {
  blocksOfPageRanges,
  mapPageRangeDiff,
  openAzureSnapshotSource,
  pageRangeFromSdk,
  redactSas,
} from '../../../worker/sources/azure-snapshot.js';
import { AccessDeniedError } from '../../../shared/core/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 512 * KiB;
const retry = { sleep: async () => {}, random: () => 0.5 };

// ---- the pure mapping ----------------------------------------------------------

test('pageRangeFromSdk undoes the SDK\'s count = End − Start, and would accept a fixed SDK too', () => {
  assert.deepEqual(pageRangeFromSdk({ offset: 1024, count: 511 }), { start: 1024, end: 1535 });
  assert.deepEqual(pageRangeFromSdk({ offset: 1024, count: 512 }), { start: 1024, end: 1535 });
  assert.deepEqual(pageRangeFromSdk({ offset: 0, count: 4 * MiB - 1 }), { start: 0, end: 4 * MiB - 1 });
});

test('blocksOfPageRanges maps inclusive byte ranges to every block they touch, once each', () => {
  const cases: Array<[Array<{ start: number; end: number }>, number[]]> = [
    [[], []],
    [[{ start: 0, end: 511 }], [0]],
    [[{ start: BS - 512, end: BS - 1 }], [0]],
    [[{ start: BS - 512, end: BS + 511 }], [0, 1]],
    [[{ start: BS, end: 3 * BS - 1 }], [1, 2]],
    [
      [
        { start: 0, end: 511 },
        { start: 1024, end: 1535 },
        { start: 5 * BS, end: 5 * BS + 511 },
      ],
      [0, 5],
    ],
    // Out of order input (page and clear lists merged) still comes out ascending.
    [
      [
        { start: 7 * BS, end: 7 * BS + 511 },
        { start: 2 * BS, end: 2 * BS + 511 },
      ],
      [2, 7],
    ],
  ];
  for (const [ranges, expected] of cases) assert.deepEqual(blocksOfPageRanges(ranges, BS), expected, JSON.stringify(ranges));
});

test('mapPageRangeDiff: cleared-only blocks are zeros; partly cleared or also written blocks must be read', () => {
  // Prepare
  const size = 8 * BS + 1536; // a short last block (8) of 1536 bytes
  const diff = {
    pageRange: [{ start: 2 * BS + 512, end: 2 * BS + 1023 }],
    clearRange: [
      { start: 0, end: BS - 1 }, // block 0 whole
      { start: 2 * BS, end: 2 * BS + 511 }, // block 2, which is also written
      { start: 3 * BS, end: 3 * BS + BS / 2 - 1 }, // block 3 first half only
      { start: 5 * BS + BS / 2, end: 6 * BS - 1 }, // block 5 second half…
      { start: 5 * BS, end: 5 * BS + BS / 2 - 1 }, // …and first half, listed after it
      { start: 8 * BS, end: 8 * BS + 1535 }, // the short last block, whole
    ],
  };

  // Act
  const mapped = mapPageRangeDiff(diff, BS, size);

  // Assess
  assert.deepEqual(mapped.blocks, [0, 2, 3, 5, 8]);
  assert.deepEqual(mapped.clearedBlocks, [0, 5, 8]);
});

// ---- against Azurite -------------------------------------------------------------

let az: Azurite;
let container: ContainerClient;
let credential: StorageSharedKeyCredential;

before(async () => {
  az = await startAzurite();
  credential = new StorageSharedKeyCredential(az.account, az.accountKey);
  container = BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient('snapshots');
  await container.create();
});
after(async () => {
  await az?.stop();
});

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) b.writeUInt32LE((seed * 2654435761 + i * 40503) >>> 0, i);
  return b;
}

function sasFor(blobName: string, snapshot: string | undefined, permissions: string): string {
  const sas = generateBlobSASQueryParameters(
    {
      containerName: container.containerName,
      blobName,
      snapshotTime: snapshot,
      permissions: BlobSASPermissions.parse(permissions),
      expiresOn: new Date(Date.now() + 3600_000),
    },
    credential,
  ).toString();
  const url = container.getPageBlobClient(blobName).url;
  return snapshot ? `${url}?snapshot=${encodeURIComponent(snapshot)}&${sas}` : `${url}?${sas}`;
}

test('the SDK reports page ranges as { offset, count: End − Start } (pinned against Azurite)', async () => {
  // Prepare
  const blob = container.getPageBlobClient('convention');
  await blob.create(8 * KiB);
  await blob.uploadPages(pattern(512, 1), 1024, 512);

  // Act
  const viaGet = (await blob.getPageRanges()).pageRange ?? [];
  const viaList: Array<{ start: number; end: number }> = [];
  for await (const r of blob.listPageRanges()) viaList.push({ start: r.start, end: r.end });

  // Assess: one page 1024…1535 (inclusive); getPageRanges says count 511.
  assert.deepEqual(viaGet, [{ offset: 1024, count: 511 }]);
  assert.deepEqual(viaList, [{ start: 1024, end: 1535 }]);
  assert.deepEqual(viaGet.map(pageRangeFromSdk), viaList);
});

test('reads a page-blob snapshot through its SAS: allocated blocks, exact bytes, zeros elsewhere', async () => {
  // Prepare: a 4 MiB + 1536 B disk (short last block) with data in blocks 0, 2–3, 5 and the last.
  const size = 4 * MiB + 1536;
  const image = Buffer.alloc(size);
  const blob = container.getPageBlobClient('disk-a');
  await blob.create(size);
  const writes: Array<[number, number]> = [
    [0, 4096],
    [2 * BS + 512, BS + 1024], // spans blocks 2 and 3
    [5 * BS + BS - 512, 512], // last page of block 5
    [8 * BS, 1536], // the short last block
  ];
  for (const [offset, length] of writes) {
    const data = pattern(length, offset);
    data.copy(image, offset);
    await blob.uploadPages(data, offset, length);
  }
  const snap = await blob.createSnapshot();
  // Changes after the snapshot must not show through it.
  await blob.uploadPages(pattern(BS, 99), 6 * BS, BS);
  await blob.clearPages(0, 4096);

  // Act
  const source = await openAzureSnapshotSource({ sasUrl: sasFor('disk-a', snap.snapshot, 'r'), concurrency: 4, retry });
  const allocated = await source.allocatedBlocks();
  const all = await Promise.all(Array.from({ length: Math.ceil(size / BS) }, (_, i) => source.readBlock(i)));

  // Assess
  assert.equal(source.size, size);
  assert.equal(source.blockSize, BS);
  assert.deepEqual(allocated, [0, 2, 3, 5, 8]);
  assert.equal(all[8].byteLength, 1536, 'the last block is short');
  assert.ok(Buffer.concat(all).equals(image), 'every byte, unallocated ranges as zeros');
  await source.close();
});

test('an expired or revoked SAS fails with AccessDeniedError that says to grant access again', async () => {
  // Prepare
  const blob = container.getPageBlobClient('disk-b');
  await blob.create(BS);
  const good = sasFor('disk-b', undefined, 'r');
  const tampered = good.replace(/sig=[^&]+/, 'sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D');

  // Act / Assess
  await assert.rejects(openAzureSnapshotSource({ sasUrl: tampered, retry }), (e: unknown) => {
    assert.ok(e instanceof AccessDeniedError);
    assert.match(e.message, /grant access again/);
    assert.doesNotMatch(e.message, /sig=/, 'the SAS signature never reaches a message');
    return true;
  });
});

// ---- the diff, on a recorded response ---------------------------------------------

const RECORDED = readFileSync(new URL('./fixtures/azure-page-ranges-diff.xml', import.meta.url), 'utf8');
const DIFF_DISK = 16 * MiB;

/** The recorded answer's ranges, so the fake service can answer sub-ranges like the real one. */
function recordedRanges(): Array<{ tag: 'PageRange' | 'ClearRange'; start: number; end: number }> {
  return [...RECORDED.matchAll(/<(PageRange|ClearRange)>\s*<Start>(\d+)<\/Start>\s*<End>(\d+)<\/End>\s*<\/\1>/g)].map((m) => ({
    tag: m[1] as 'PageRange' | 'ClearRange',
    start: Number(m[2]),
    end: Number(m[3]),
  }));
}

interface FakeService {
  url: string;
  diffRequests: Array<{ range: string; prevSnapshotUrl?: string; prevsnapshot?: string }>;
  downloads: string[];
  close(): Promise<void>;
}

/**
 * A managed-disk snapshot endpoint: HEAD gives the size, `comp=pagelist` with
 * a previous snapshot answers from the recorded body (clipped to the range
 * asked, like the service; truncated with a NextMarker when asked for more than
 * `truncateAbove` bytes), a ranged GET returns bytes.
 */
async function startFakeService(opts: { truncateAbove?: number } = {}): Promise<FakeService> {
  const diffRequests: FakeService['diffRequests'] = [];
  const downloads: string[] = [];
  const common = { 'x-ms-version': '2025-01-05', 'x-ms-request-id': '00000000-0000-0000-0000-000000000000', 'last-modified': 'Mon, 03 Mar 2025 10:00:00 GMT', etag: '"0x8DD5A2B4C3D2E1F"' };
  const server: Server = createServer((req: IncomingMessage, res) => {
    const u = new URL(req.url!, 'http://x');
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...common, 'content-length': String(DIFF_DISK), 'x-ms-blob-type': 'PageBlob', 'content-type': 'application/octet-stream' });
      return res.end();
    }
    if (u.searchParams.get('comp') === 'pagelist') {
      const range = String(req.headers['x-ms-range'] ?? req.headers.range ?? '');
      diffRequests.push({ range, prevSnapshotUrl: req.headers['x-ms-previous-snapshot-url'] as string | undefined, prevsnapshot: u.searchParams.get('prevsnapshot') ?? undefined });
      const [, a, b] = /bytes=(\d+)-(\d+)/.exec(range)!.map(Number);
      const clipped = recordedRanges()
        .filter((r) => r.end >= a && r.start <= b)
        .map((r) => ({ ...r, start: Math.max(r.start, a), end: Math.min(r.end, b) }));
      const truncate = opts.truncateAbove !== undefined && b - a + 1 > opts.truncateAbove && clipped.length > 1;
      const shown = truncate ? clipped.slice(0, 1) : clipped;
      const body =
        '<?xml version="1.0" encoding="utf-8"?><PageList>' +
        shown.map((r) => `<${r.tag}><Start>${r.start}</Start><End>${r.end}</End></${r.tag}>`).join('') +
        (truncate ? '<NextMarker>2!96!MDAwMDI0IWJsb2NrcyEwMDAwMjgh</NextMarker>' : '') +
        '</PageList>';
      res.writeHead(200, { ...common, 'content-type': 'application/xml', 'x-ms-blob-content-length': String(DIFF_DISK) });
      return res.end(body);
    }
    if (req.method === 'GET') {
      const range = String(req.headers['x-ms-range'] ?? req.headers.range ?? '');
      downloads.push(range);
      const [, a, b] = /bytes=(\d+)-(\d+)/.exec(range)!.map(Number);
      const data = Buffer.alloc(b - a + 1, 0x5a);
      res.writeHead(206, { ...common, 'content-length': String(data.length), 'content-range': `bytes ${a}-${b}/${DIFF_DISK}`, 'x-ms-blob-type': 'PageBlob', 'content-type': 'application/octet-stream' });
      return res.end(data);
    }
    res.writeHead(400).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    diffRequests,
    downloads,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const SNAP_SAS = '?sv=2018-03-28&sr=b&si=0d2f5e7b&sig=c2lnbmF0dXJlLW5vdC1yZWFs';
const PARENT_SAS = '?sv=2018-03-28&sr=b&si=7c1a9b3e&sig=cGFyZW50LW5vdC1yZWFs';

test('changed blocks from a recorded managed-disk diff: written and cleared ranges mapped to blocks, cleared blocks read as zeros', async () => {
  // Prepare
  const svc = await startFakeService();
  try {
    const parentUrl = `${svc.url}/md-parent/abcd${PARENT_SAS}`;
    const source = await openAzureSnapshotSource({ sasUrl: `${svc.url}/md-child/abcd${SNAP_SAS}`, retry });

    // Act
    const changed = await source.changedBlocks(parentUrl);
    const block4 = await source.readBlock(4);
    const block10 = await source.readBlock(10);
    const block7 = await source.readBlock(7);

    // Assess
    assert.deepEqual(changed, { blocks: [0, 1, 2, 4, 6, 7, 10, 31], incremental: true });
    assert.ok(block4.every((b) => b === 0) && block10.every((b) => b === 0), 'wholly cleared blocks are zeros');
    assert.equal(block7[0], 0x5a, 'a partly cleared block is read from the snapshot');
    assert.deepEqual(svc.downloads, [`bytes=${7 * BS}-${8 * BS - 1}`], 'no request for the cleared blocks');
    assert.equal(svc.diffRequests.length, 1);
    assert.equal(svc.diffRequests[0].prevSnapshotUrl, parentUrl, 'managed disks name the parent by URL');
    assert.equal(svc.diffRequests[0].range, `bytes=0-${DIFF_DISK - 1}`);
  } finally {
    await svc.close();
  }
});

test('a diff answer truncated with a NextMarker is asked again in smaller windows, and nothing is lost', async () => {
  // Prepare
  const svc = await startFakeService({ truncateAbove: 2 * MiB });
  try {
    const source = await openAzureSnapshotSource({ sasUrl: `${svc.url}/md-child/abcd${SNAP_SAS}`, diffWindowBytes: 8 * MiB, retry });

    // Act
    const changed = await source.changedBlocks(`${svc.url}/md-parent/abcd${PARENT_SAS}`);

    // Assess
    assert.deepEqual(changed.blocks, [0, 1, 2, 4, 6, 7, 10, 31]);
    assert.ok(svc.diffRequests.length > 2, 'windows were split');
  } finally {
    await svc.close();
  }
});

test('a parent that is a snapshot of the same blob is named by its timestamp (prevsnapshot)', async () => {
  // Prepare
  const svc = await startFakeService();
  try {
    const stamp = '2025-03-03T10:00:00.0000000Z';
    const source = await openAzureSnapshotSource({ sasUrl: `${svc.url}/acct/disks/d1?snapshot=2025-03-04T10%3A00%3A00.0000000Z&sv=x&sig=y`, retry });

    // Act
    const changed = await source.changedBlocks(`${svc.url}/acct/disks/d1?snapshot=${encodeURIComponent(stamp)}&sv=x&sig=z`);

    // Assess
    assert.equal(changed.incremental, true);
    assert.equal(svc.diffRequests[0].prevsnapshot, stamp);
    assert.equal(svc.diffRequests[0].prevSnapshotUrl, undefined);
  } finally {
    await svc.close();
  }
});

test('changedBlocks with a parent reference that is not a URL uses parentSasUrl, and says what is missing without it', async () => {
  // Prepare
  const svc = await startFakeService();
  try {
    const parentUrl = `${svc.url}/md-parent/abcd${PARENT_SAS}`;
    const withParent = await openAzureSnapshotSource({ sasUrl: `${svc.url}/md-child/abcd${SNAP_SAS}`, parentSasUrl: parentUrl, retry });
    const without = await openAzureSnapshotSource({ sasUrl: `${svc.url}/md-child/abcd${SNAP_SAS}`, retry });
    const ref = '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/vm1-os-1';

    // Act
    const changed = await withParent.changedBlocks(ref);

    // Assess
    assert.equal(changed.blocks.length, 8);
    assert.equal(svc.diffRequests[0].prevSnapshotUrl, parentUrl);
    await assert.rejects(without.changedBlocks(ref), /parentSasUrl/);
  } finally {
    await svc.close();
  }
});

test('redactSas keeps the blob and snapshot, drops the signature', () => {
  assert.equal(redactSas('https://md-x.blob.core.windows.net/c/abcd?sv=1&sig=secret'), 'https://md-x.blob.core.windows.net/c/abcd');
  assert.equal(redactSas('http://h/a/c/b?snapshot=2025-01-01T00%3A00%3A00Z&sig=s'), 'http://h/a/c/b?snapshot=2025-01-01T00:00:00Z');
});
