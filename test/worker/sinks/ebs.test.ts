import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mockClient } from 'aws-sdk-client-mock';
import {
  CompleteSnapshotCommand,
  EBSClient,
  EBSServiceException,
  PutSnapshotBlockCommand,
  StartSnapshotCommand,
  ValidationException,
  type CompleteSnapshotCommandInput,
  type PutSnapshotBlockCommandInput,
  type StartSnapshotCommandInput,
} from '@aws-sdk/client-ebs';
import { SnapshotFailedError, TransientError } from '../../../shared/core/errors.js';
import { createEbsSink } from '../../../worker/sinks/ebs.js';
import { EBS_BLOCK_SIZE } from '../../../worker/sources/ebs.js';

const client = new EBSClient({ region: 'eu-west-1', credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test' } });
const ebs = mockClient(client);
const retry = { sleep: async () => {}, random: () => 0.5 };

function block(seed: number, length = EBS_BLOCK_SIZE): Uint8Array {
  const b = Buffer.alloc(length);
  for (let i = 0; i < b.length; i += 512) b.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return b;
}
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('base64');

type Fault = () => unknown;

/**
 * EBS as the direct APIs behave: StartSnapshot is idempotent per ClientToken,
 * PutSnapshotBlock checks the checksum of what it received, CompleteSnapshot
 * checks the block count. What was stored can be inspected afterwards.
 */
function fakeEbs() {
  const state = {
    snapshots: new Map<string, { token?: string; status: string; input: StartSnapshotCommandInput; blocks: Map<number, Buffer> }>(),
    putFaults: [] as Fault[],
    startFaults: [] as Fault[],
    inFlight: 0,
    peakInFlight: 0,
  };
  ebs.on(StartSnapshotCommand).callsFake((input: StartSnapshotCommandInput) => {
    const fault = state.startFaults.shift();
    if (fault) return fault();
    for (const [id, s] of state.snapshots) if (input.ClientToken && s.token === input.ClientToken) return { SnapshotId: id, Status: s.status, BlockSize: EBS_BLOCK_SIZE, VolumeSize: input.VolumeSize };
    const id = `snap-0${(state.snapshots.size + 1).toString(16).padStart(16, '0')}`;
    state.snapshots.set(id, { token: input.ClientToken, status: 'pending', input, blocks: new Map() });
    return { SnapshotId: id, Status: 'pending', BlockSize: EBS_BLOCK_SIZE, VolumeSize: input.VolumeSize, StartTime: new Date() };
  });
  ebs.on(PutSnapshotBlockCommand).callsFake(async (input: PutSnapshotBlockCommandInput) => {
    state.inFlight++;
    state.peakInFlight = Math.max(state.peakInFlight, state.inFlight);
    try {
      await new Promise((r) => setImmediate(r));
      const fault = state.putFaults.shift();
      if (fault) return await fault();
      const data = Buffer.from(input.BlockData as Uint8Array);
      if (data.length !== EBS_BLOCK_SIZE || input.DataLength !== EBS_BLOCK_SIZE) {
        throw new ValidationException({ message: 'The data length must be 524288', Reason: 'INVALID_PARAMETER_VALUE', $metadata: { httpStatusCode: 400 } });
      }
      if (input.ChecksumAlgorithm !== 'SHA256' || input.Checksum !== sha(data)) {
        throw new ValidationException({ message: 'The checksum does not match', Reason: 'INVALID_PARAMETER_VALUE', $metadata: { httpStatusCode: 400 } });
      }
      state.snapshots.get(input.SnapshotId!)!.blocks.set(input.BlockIndex!, data);
      return { Checksum: input.Checksum, ChecksumAlgorithm: 'SHA256' };
    } finally {
      state.inFlight--;
    }
  });
  ebs.on(CompleteSnapshotCommand).callsFake((input: CompleteSnapshotCommandInput) => {
    const s = state.snapshots.get(input.SnapshotId!)!;
    if (input.ChangedBlocksCount !== s.blocks.size) {
      throw new ValidationException({ message: 'ChangedBlocksCount does not match the blocks written', Reason: 'INVALID_PARAMETER_VALUE', $metadata: { httpStatusCode: 400 } });
    }
    s.status = 'completed';
    return { Status: 'pending' };
  });
  return state;
}

beforeEach(() => ebs.reset());

test('writes blocks into a new snapshot, skips zero blocks, pads the short last one, and completes it', async () => {
  // Prepare
  const fake = fakeEbs();
  const blocks = new Map<number, Uint8Array>([
    [0, block(1)],
    [1, new Uint8Array(EBS_BLOCK_SIZE)],
    [5, block(5)],
    [2047, block(7, 4096)],
  ]);

  // Act
  const sink = await createEbsSink({ client, volumeSizeGiB: 1, tags: { 'tender:run': 'r1' }, description: 'Tender restore of vm-1', retry });
  for (const [i, data] of blocks) await sink.writeBlock(i, data);
  const snapshotId = await sink.finish();

  // Assess
  const snap = fake.snapshots.get(snapshotId)!;
  assert.equal(snap.status, 'completed');
  assert.deepEqual([...snap.blocks.keys()].sort((a, b) => a - b), [0, 5, 2047], 'the zero block was not sent');
  assert.ok(snap.blocks.get(0)!.equals(blocks.get(0)!));
  assert.ok(snap.blocks.get(2047)!.subarray(0, 4096).equals(blocks.get(2047)!));
  assert.ok(snap.blocks.get(2047)!.subarray(4096).every((b) => b === 0));
  assert.equal(snap.input.VolumeSize, 1);
  assert.deepEqual(snap.input.Tags, [{ Key: 'tender:run', Value: 'r1' }]);
  assert.equal(snap.input.Description, 'Tender restore of vm-1');
  assert.ok(snap.input.ClientToken, 'StartSnapshot is idempotent');
});

test('with a parent snapshot, zero blocks are written (they must overwrite the parent\'s data)', async () => {
  // Prepare
  const fake = fakeEbs();

  // Act
  const sink = await createEbsSink({ client, volumeSizeGiB: 1, parentSnapshotId: 'snap-0parent000000000', retry });
  await sink.writeBlock(3, new Uint8Array(EBS_BLOCK_SIZE));
  const id = await sink.finish();

  // Assess
  const snap = fake.snapshots.get(id)!;
  assert.equal(snap.input.ParentSnapshotId, 'snap-0parent000000000');
  assert.ok(snap.blocks.get(3)!.every((b) => b === 0));
});

test('keeps at most `concurrency` PutSnapshotBlock requests in flight', async () => {
  // Prepare
  const fake = fakeEbs();
  const sink = await createEbsSink({ client, volumeSizeGiB: 1, concurrency: 3, retry });

  // Act
  for (let i = 0; i < 20; i++) await sink.writeBlock(i, block(i));
  const id = await sink.finish();

  // Assess
  assert.equal(fake.snapshots.get(id)!.blocks.size, 20);
  assert.ok(fake.peakInFlight <= 3, `peak ${fake.peakInFlight}`);
  assert.ok(fake.peakInFlight > 1, 'writes do overlap');
});

test('throttled and hung puts are retried and the snapshot is still complete', async () => {
  // Prepare
  const fake = fakeEbs();
  fake.putFaults.push(
    () => {
      throw new EBSServiceException({ name: 'ThrottlingException', $fault: 'client', message: 'Rate exceeded', $metadata: { httpStatusCode: 400 } });
    },
    () => new Promise(() => {}),
  );
  fake.startFaults.push(() => {
    throw new EBSServiceException({ name: 'ThrottlingException', $fault: 'client', message: 'Rate exceeded', $metadata: { httpStatusCode: 400 } });
  });
  const sink = await createEbsSink({ client, volumeSizeGiB: 1, concurrency: 1, requestTimeoutMs: 250, retry });

  // Act
  await sink.writeBlock(0, block(0));
  await sink.writeBlock(1, block(1));
  const id = await sink.finish();

  // Assess
  const snap = fake.snapshots.get(id)!;
  assert.equal(snap.status, 'completed');
  assert.equal(snap.blocks.size, 2);
  assert.equal(fake.snapshots.size, 1, 'the retried StartSnapshot reused its ClientToken');
  const starts = ebs.commandCalls(StartSnapshotCommand).map((c) => c.args[0].input.ClientToken);
  assert.equal(new Set(starts).size, 1);
});

test('a put that keeps failing makes finish fail and never completes the snapshot', async () => {
  // Prepare
  const fake = fakeEbs();
  for (let i = 0; i < 10; i++) {
    fake.putFaults.push(() => {
      throw new EBSServiceException({ name: 'InternalServerException', $fault: 'server', message: 'internal error', $metadata: { httpStatusCode: 500 } });
    });
  }
  const sink = await createEbsSink({ client, volumeSizeGiB: 1, retry: { ...retry, attempts: 3 } });

  // Act
  await sink.writeBlock(0, block(0)).catch(() => undefined);
  const finished = sink.finish();

  // Assess
  await assert.rejects(finished, (e: unknown) => e instanceof TransientError && /block 0 still failing after 3 attempts/.test(e.message));
  assert.equal(ebs.commandCalls(CompleteSnapshotCommand).length, 0);
  assert.equal([...fake.snapshots.values()][0].status, 'pending');
});

test('abort leaves no completed snapshot and deletes the started one through the hook', async () => {
  // Prepare
  const fake = fakeEbs();
  const deleted: string[] = [];
  const sink = await createEbsSink({ client, volumeSizeGiB: 1, retry, deleteSnapshot: async (id) => void deleted.push(id) });
  await sink.writeBlock(0, block(0));

  // Act
  await sink.abort();

  // Assess
  assert.equal(ebs.commandCalls(CompleteSnapshotCommand).length, 0);
  assert.deepEqual(deleted, [sink.snapshotId]);
  assert.notEqual(fake.snapshots.get(sink.snapshotId)!.status, 'completed');
  await assert.rejects(sink.writeBlock(1, block(1)), /after abort/);
});

test('abort says so when the started snapshot cannot be deleted', async () => {
  // Prepare
  fakeEbs();
  const sink = await createEbsSink({
    client,
    volumeSizeGiB: 1,
    retry,
    deleteSnapshot: async () => {
      throw new Error('UnauthorizedOperation');
    },
  });

  // Act / Assess
  await assert.rejects(sink.abort(), (e: unknown) => e instanceof SnapshotFailedError && e.message.includes(sink.snapshotId) && /cancels it after 60 minutes/.test(e.message));
});

test('the caller may reuse its buffer as soon as writeBlock returns', async () => {
  // Prepare
  const fake = fakeEbs();
  const sink = await createEbsSink({ client, volumeSizeGiB: 1, concurrency: 4, retry });
  const buffer = Buffer.alloc(EBS_BLOCK_SIZE);

  // Act
  for (let i = 0; i < 8; i++) {
    block(i).forEach((v, n) => (buffer[n] = v));
    await sink.writeBlock(i, buffer);
  }
  buffer.fill(0xee);
  const id = await sink.finish();

  // Assess
  const snap = fake.snapshots.get(id)!;
  for (let i = 0; i < 8; i++) assert.ok(snap.blocks.get(i)!.equals(block(i)), `block ${i}`);
});
