import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { mockClient } from 'aws-sdk-client-mock';
import {
  AccessDeniedException,
  EBSClient,
  EBSServiceException,
  GetSnapshotBlockCommand,
  ListChangedBlocksCommand,
  ListSnapshotBlocksCommand,
  RequestThrottledException,
  ResourceNotFoundException,
  ValidationException,
  type GetSnapshotBlockCommandInput,
  type ListChangedBlocksCommandInput,
  type ListSnapshotBlocksCommandInput,
} from '@aws-sdk/client-ebs';
import { AccessDeniedError, CorruptObjectError, NotFoundError, TransientError } from '../../../shared/core/errors.js';
import { EBS_BLOCK_SIZE, openEbsSource } from '../../../worker/sources/ebs.js';

const SNAP = 'snap-0a1b2c3d4e5f60718';
const PARENT = 'snap-0ffeeddccbbaa9988';
const GiB = 1024 ** 3;

const client = new EBSClient({ region: 'eu-west-1', credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test' } });
const ebs = mockClient(client);
beforeEach(() => ebs.reset());

// Retries are instant in tests; waits are recorded instead of slept.
const sleeps: number[] = [];
const retry = { sleep: async (ms: number) => void sleeps.push(ms), random: () => 0.5 };

function block(seed: number): Uint8Array {
  const b = Buffer.alloc(EBS_BLOCK_SIZE);
  for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return b;
}
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('base64');
const token = (snap: string, i: number) => `AAUBA${Buffer.from(`${snap}:${i}`).toString('base64')}`;

/** What the SDK hands back on Node: an IncomingMessage with transformToByteArray mixed in. */
function sdkStream(data: Uint8Array): Readable & { transformToByteArray(): Promise<Uint8Array> } {
  const stream = Readable.from([Buffer.from(data)], { objectMode: false });
  return Object.assign(stream, {
    async transformToByteArray() {
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      return new Uint8Array(Buffer.concat(chunks));
    },
  });
}

/**
 * A snapshot as the EBS direct APIs show it: ListSnapshotBlocks pages of
 * `pageSize` (with an empty page carrying a NextToken after the first, as EBS
 * sometimes sends), GetSnapshotBlock answering by token with its checksum.
 */
type Fault = () => unknown;
function serveSnapshot(snap: string, blocks: Map<number, Uint8Array>, opts: { pageSize?: number; volumeGiB?: number } = {}) {
  const pageSize = opts.pageSize ?? 2;
  const indices = [...blocks.keys()].sort((a, b) => a - b);
  // Scripted answers served, in order, before the snapshot's own (throw to fail a call).
  const faults = { list: [] as Fault[], read: [] as Fault[] };
  ebs.on(ListSnapshotBlocksCommand).callsFake((input: ListSnapshotBlocksCommandInput) => {
    const fault = faults.list.shift();
    if (fault) return fault();
    // NextToken is opaque to clients; here it encodes "position, emptyPageServed".
    const [pos, emptyServed] = input.NextToken ? input.NextToken.split(':').map(Number) : [indices.findIndex((i) => i >= (input.StartingBlockIndex ?? 0)), 0];
    const start = pos < 0 ? indices.length : pos;
    const base = { ExpiryTime: new Date(Date.now() + 7 * 864e5), VolumeSize: opts.volumeGiB ?? 1, BlockSize: EBS_BLOCK_SIZE };
    if (start > 0 && !emptyServed && start < indices.length) return { ...base, Blocks: [], NextToken: `${start}:1` };
    const limit = Math.min(pageSize, input.MaxResults ?? 10_000);
    const page = indices.slice(start, start + limit);
    const next = start + page.length;
    return {
      ...base,
      Blocks: page.map((i) => ({ BlockIndex: i, BlockToken: token(snap, i) })),
      NextToken: next < indices.length ? `${next}:0` : undefined,
    };
  });
  ebs.on(GetSnapshotBlockCommand).callsFake((input: GetSnapshotBlockCommandInput) => {
    const fault = faults.read.shift();
    if (fault) return fault();
    const data = blocks.get(input.BlockIndex!);
    if (!data || input.BlockToken !== token(snap, input.BlockIndex!)) {
      throw new ValidationException({ message: 'The block token is not valid', Reason: 'INVALID_BLOCK_TOKEN', $metadata: { httpStatusCode: 400 } });
    }
    return { DataLength: data.byteLength, BlockData: sdkStream(data), Checksum: sha(data), ChecksumAlgorithm: 'SHA256' };
  });
  return faults;
}

function throttling(): Error {
  return new EBSServiceException({ name: 'ThrottlingException', $fault: 'client', message: 'Rate exceeded', $metadata: { httpStatusCode: 400 } });
}

test('lists every written block across pages, an empty page with a NextToken included, and reads them verified', async () => {
  // Prepare
  const blocks = new Map([0, 1, 7, 300, 2047].map((i) => [i, block(i)]));
  serveSnapshot(SNAP, blocks, { pageSize: 2 });

  // Act
  const source = await openEbsSource({ client, snapshotId: SNAP, retry });
  const allocated = await source.allocatedBlocks();
  const read = await Promise.all(allocated.map((i) => source.readBlock(i)));

  // Assess
  assert.equal(source.size, 1 * GiB);
  assert.equal(source.blockSize, 512 * 1024);
  assert.deepEqual(allocated, [0, 1, 7, 300, 2047]);
  allocated.forEach((i, n) => assert.ok(Buffer.from(read[n]).equals(blocks.get(i)!), `block ${i} content`));
  const listCalls = ebs.commandCalls(ListSnapshotBlocksCommand).map((c) => c.args[0].input);
  assert.ok(listCalls.some((c) => c.NextToken !== undefined), 'kept paging');
  assert.ok(listCalls.filter((c) => c.MaxResults !== 100).every((c) => c.MaxResults === 10_000));
  await source.close();
});

test('a block the snapshot never wrote reads as zeros', async () => {
  // Prepare
  serveSnapshot(SNAP, new Map([[5, block(5)]]));
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, retry });

  // Act
  const hole = await source.readBlock(6);

  // Assess
  assert.equal(hole.byteLength, EBS_BLOCK_SIZE);
  assert.ok(hole.every((b) => b === 0));
  assert.equal(ebs.commandCalls(GetSnapshotBlockCommand).length, 0, 'no billable read for a hole');
});

test('a checksum mismatch is read again, and the good copy is returned', async () => {
  // Prepare
  const good = block(3);
  const faults = serveSnapshot(SNAP, new Map([[3, good]]));
  const damaged = Buffer.from(good);
  damaged[100] ^= 0xff;
  faults.read.push(() => ({ DataLength: damaged.length, BlockData: sdkStream(damaged), Checksum: sha(good), ChecksumAlgorithm: 'SHA256' }));
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, retry });
  await source.allocatedBlocks();

  // Act
  const data = await source.readBlock(3);

  // Assess
  assert.ok(Buffer.from(data).equals(good));
  assert.equal(ebs.commandCalls(GetSnapshotBlockCommand).length, 2, 'the damaged copy was not handed on');
});

test('a block whose checksum never matches fails with a CorruptObjectError naming the block, after a bounded number of reads', async () => {
  // Prepare
  const good = block(9);
  const faults = serveSnapshot(SNAP, new Map([[9, good]]));
  const damaged = Buffer.from(good);
  damaged[0] ^= 1;
  for (let i = 0; i < 10; i++) {
    faults.read.push(() => ({ DataLength: damaged.length, BlockData: sdkStream(damaged), Checksum: sha(good), ChecksumAlgorithm: 'SHA256' }));
  }
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, retry: { ...retry, attempts: 3 } });
  await source.allocatedBlocks();

  // Act / Assess
  await assert.rejects(source.readBlock(9), (e: unknown) => {
    assert.ok(e instanceof CorruptObjectError);
    assert.match(e.message, /snap-0a1b2c3d4e5f60718\/block\/9/);
    assert.match(e.message, /checksum mismatch/i);
    return true;
  });
  assert.equal(ebs.commandCalls(GetSnapshotBlockCommand).length, 3);
});

test('throttling is retried with backoff and the read then succeeds', async () => {
  // Prepare
  const data = block(1);
  const faults = serveSnapshot(SNAP, new Map([[1, data]]));
  faults.read.push(
    () => {
      throw throttling();
    },
    () => {
      throw new RequestThrottledException({ message: 'Request throttled', Reason: 'ACCOUNT_THROTTLED', $metadata: { httpStatusCode: 400 } });
    },
    () => {
      throw new EBSServiceException({ name: 'InternalServerException', $fault: 'server', message: 'internal', $metadata: { httpStatusCode: 500 } });
    },
  );
  sleeps.length = 0;
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, retry: { ...retry, baseMs: 100, maxMs: 10_000 } });
  await source.allocatedBlocks();

  // Act
  const got = await source.readBlock(1);

  // Assess
  assert.ok(Buffer.from(got).equals(data));
  assert.deepEqual(sleeps, [50, 100, 200], 'full jitter over growing windows, never a zero-delay retry storm');
});

test('throttling that never ends becomes a TransientError that says what to do', async () => {
  // Prepare
  const faults = serveSnapshot(SNAP, new Map([[1, block(1)]]));
  for (let i = 0; i < 10; i++) {
    faults.read.push(() => {
      throw throttling();
    });
  }
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, retry: { ...retry, attempts: 4 } });
  await source.allocatedBlocks();

  // Act / Assess
  await assert.rejects(source.readBlock(1), (e: unknown) => {
    assert.ok(e instanceof TransientError);
    assert.match(e.message, /block 1 still failing after 4 attempts/);
    assert.match(e.message, /fewer workers|concurrency/);
    return true;
  });
  assert.equal(ebs.commandCalls(GetSnapshotBlockCommand).length, 4);
});

test('a request that hangs is cut by the timeout and retried', async () => {
  // Prepare
  const data = block(2);
  const faults = serveSnapshot(SNAP, new Map([[2, data]]));
  // The first request never answers; the second answers its headers, then its body stalls.
  const stalled = new Readable({ read() {} });
  faults.read.push(
    () => new Promise(() => {}),
    () => ({ DataLength: data.length, BlockData: stalled, Checksum: sha(data), ChecksumAlgorithm: 'SHA256' }),
  );
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, requestTimeoutMs: 250, retry });
  await source.allocatedBlocks();

  // Act
  const got = await source.readBlock(2);

  // Assess
  assert.ok(Buffer.from(got).equals(data));
  assert.equal(ebs.commandCalls(GetSnapshotBlockCommand).length, 3);
  assert.equal(stalled.destroyed, true, 'the stalled body was torn down, not left holding a socket');
});

test('a request that always hangs fails with a TransientError instead of hanging the backup', async () => {
  // Prepare
  const faults = serveSnapshot(SNAP, new Map([[2, block(2)]]));
  for (let i = 0; i < 10; i++) faults.read.push(() => new Promise(() => {}));
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, requestTimeoutMs: 20, retry: { ...retry, attempts: 2 } });
  await source.allocatedBlocks();

  // Act / Assess
  await assert.rejects(source.readBlock(2), (e: unknown) => e instanceof TransientError && /no complete answer within 20 ms/.test(e.message));
});

test('changed blocks come from ListChangedBlocks, paged through an empty page, and read with the second snapshot\'s tokens', async () => {
  // Prepare
  const blocks = new Map([10, 11, 500].map((i) => [i, block(i + 1000)]));
  serveSnapshot(SNAP, blocks);
  const pages = [
    { ChangedBlocks: [{ BlockIndex: 10, FirstBlockToken: token(PARENT, 10), SecondBlockToken: token(SNAP, 10) }], NextToken: 'p2' },
    { ChangedBlocks: [], NextToken: 'p3' },
    {
      ChangedBlocks: [
        { BlockIndex: 500, SecondBlockToken: token(SNAP, 500) },
        // In the parent, not in this snapshot: must read as zeros.
        { BlockIndex: 900, FirstBlockToken: token(PARENT, 900) },
      ],
    },
  ];
  ebs.on(ListChangedBlocksCommand).callsFake((input: ListChangedBlocksCommandInput) => {
    const n = input.NextToken === undefined ? 0 : input.NextToken === 'p2' ? 1 : 2;
    return { ...pages[n], VolumeSize: 1, BlockSize: EBS_BLOCK_SIZE, ExpiryTime: new Date() };
  });
  const source = await openEbsSource({ client, snapshotId: SNAP, retry });

  // Act
  const changed = await source.changedBlocks(PARENT);
  const data = await Promise.all(changed.blocks.map((i) => source.readBlock(i)));

  // Assess
  assert.deepEqual(changed, { blocks: [10, 500, 900], incremental: true });
  assert.ok(Buffer.from(data[0]).equals(blocks.get(10)!));
  assert.ok(Buffer.from(data[1]).equals(blocks.get(500)!));
  assert.ok(data[2].every((b) => b === 0));
  const calls = ebs.commandCalls(ListChangedBlocksCommand).map((c) => c.args[0].input);
  assert.equal(calls.length, 3);
  assert.ok(calls.every((c) => c.FirstSnapshotId === PARENT && c.SecondSnapshotId === SNAP && c.MaxResults === 10_000));
});

test('snapshots that are not related turn into a full read that says so', async () => {
  // Prepare
  serveSnapshot(SNAP, new Map([2, 4, 6].map((i) => [i, block(i)])));
  ebs.on(ListChangedBlocksCommand).rejects(
    new ValidationException({
      message: `The snapshots ${PARENT} and ${SNAP} are not related.`,
      Reason: 'UNRELATED_SNAPSHOTS',
      $metadata: { httpStatusCode: 400 },
    }),
  );
  const source = await openEbsSource({ client, snapshotId: SNAP, retry });

  // Act
  const changed = await source.changedBlocks(PARENT);

  // Assess
  assert.equal(changed.incremental, false);
  assert.equal(changed.reason, `EBS: snapshots ${PARENT} and ${SNAP} are not related — full read`);
  assert.deepEqual(changed.blocks, [2, 4, 6]);
});

test('a snapshot that "does not exist" just after creation is waited for, within a bound', async () => {
  // Prepare
  const faults = serveSnapshot(SNAP, new Map([[0, block(0)]]));
  const notYet = () => {
    throw new ResourceNotFoundException({ message: `The snapshot '${SNAP}' does not exist.`, Reason: 'SNAPSHOT_NOT_FOUND', $metadata: { httpStatusCode: 404 } });
  };
  faults.list.push(notYet, notYet);
  sleeps.length = 0;

  // Act
  const source = await openEbsSource({ client, snapshotId: SNAP, retry, notFoundPollMs: 5_000 });

  // Assess
  assert.equal(source.size, GiB);
  assert.deepEqual(sleeps, [5_000, 5_000]);
});

test('a snapshot that never appears fails with NotFoundError once the wait is spent', async () => {
  // Prepare
  ebs.on(ListSnapshotBlocksCommand).rejects(
    new ResourceNotFoundException({ message: `The snapshot '${SNAP}' does not exist.`, Reason: 'SNAPSHOT_NOT_FOUND', $metadata: { httpStatusCode: 404 } }),
  );
  sleeps.length = 0;

  // Act / Assess
  await assert.rejects(openEbsSource({ client, snapshotId: SNAP, retry, notFoundWaitMs: 12_000, notFoundPollMs: 5_000 }), NotFoundError);
  assert.deepEqual(sleeps, [5_000, 5_000, 2_000]);
});

test('access denied fails at once with AccessDeniedError', async () => {
  // Prepare
  ebs.on(ListSnapshotBlocksCommand).rejects(
    new AccessDeniedException({ message: 'User is not authorized to perform ebs:ListSnapshotBlocks', Reason: 'UNAUTHORIZED_ACCOUNT', $metadata: { httpStatusCode: 403 } }),
  );

  // Act / Assess
  await assert.rejects(openEbsSource({ client, snapshotId: SNAP, retry }), (e: unknown) => e instanceof AccessDeniedError && /ebs:/.test(e.message));
  assert.equal(ebs.commandCalls(ListSnapshotBlocksCommand).length, 1);
});

test('with a small token cache, blocks beyond it are still read correctly (tokens looked up again in windows)', async () => {
  // Prepare
  const blocks = new Map([1, 2, 3, 50, 51, 1000].map((i) => [i, block(i)]));
  serveSnapshot(SNAP, blocks, { pageSize: 3 });
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, maxCachedTokens: 2, concurrency: 4, retry });

  // Act
  const allocated = await source.allocatedBlocks();
  const data = await Promise.all([...allocated, 52].map((i) => source.readBlock(i)));

  // Assess
  assert.deepEqual(allocated, [1, 2, 3, 50, 51, 1000]);
  allocated.forEach((i, n) => assert.ok(Buffer.from(data[n]).equals(blocks.get(i)!), `block ${i}`));
  assert.ok(data[allocated.length].every((b) => b === 0), 'unwritten block 52 reads as zeros');
  const lookups = ebs.commandCalls(ListSnapshotBlocksCommand).filter((c) => (c.args[0].input as ListSnapshotBlocksCommandInput).StartingBlockIndex);
  assert.ok(lookups.length >= 1, 'tokens beyond the cache were looked up by window');
});

test('a stale block token is looked up again once', async () => {
  // Prepare
  const blocks = new Map([[4, block(4)]]);
  serveSnapshot(SNAP, blocks);
  ebs.on(ListChangedBlocksCommand).resolves({ ChangedBlocks: [{ BlockIndex: 4, SecondBlockToken: 'expired-token' }] });
  const source = await openEbsSource({ client, snapshotId: SNAP, sizeBytes: GiB, retry });
  await source.changedBlocks(PARENT);

  // Act
  const data = await source.readBlock(4);

  // Assess
  assert.ok(Buffer.from(data).equals(blocks.get(4)!));
});
