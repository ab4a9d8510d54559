// The EC2 snapshot adapter against mocked EC2: VMs found by id and tag, one
// snapshot set per (run, VM) however often the step runs, its state read back
// (an `error` snapshot fails the set), and deletion that tolerates what is gone.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { CreateSnapshotsCommand, DescribeInstancesCommand, DescribeSnapshotsCommand } from '@aws-sdk/client-ec2';
import { createEc2Snapshots } from '../../shared/aws/ec2-snapshots.js';
import { sameClients } from '../../shared/aws/clients.js';
import { AccessDeniedError, NotFoundError, SnapshotFailedError, TransientError } from '../../shared/core/errors.js';
import { fixedClock } from '../../shared/core/clock.js';
import { runCheckSnapshot } from '../../functions/check-snapshot/step.js';
import { REGION, awsError, createFakeAws, type FakeAws } from './fake-aws.js';
import { runContext } from './fixtures.js';

let fake: FakeAws;
afterEach(() => fake?.restore());

function setup(opts: Parameters<typeof createFakeAws>[0] = {}) {
  fake = createFakeAws(opts);
  fake.addVm('i-0aaaaaaaaaaaaaaa1', { Name: 'web-1', backup: 'web' }, [{ device: '/dev/xvda', sizeGiB: 8 }, { device: '/dev/xvdf', sizeGiB: 100 }]);
  fake.addVm('i-0bbbbbbbbbbbbbbb2', { Name: 'db-1', backup: 'db' }, [{ device: '/dev/xvda', sizeGiB: 20 }]);
  const clock = fixedClock('2024-05-01T02:00:00Z');
  const snapshots = createEc2Snapshots({ clients: sameClients({ ec2: fake.clients.ec2 }), regions: [REGION], clock });
  return { snapshots, clock };
}

test('findVms: by tag and by id, with every EBS volume, its size and device; Tender workers are never selected', async () => {
  // Prepare
  const { snapshots } = setup();
  fake.addVm('i-0ccccccccccccccc3', { backup: 'web', 'tender:role': 'worker' }, []);
  // Act
  const byTag = await snapshots.findVms({ tags: { backup: 'web' } });
  const byId = await snapshots.findVms({ ids: ['i-0bbbbbbbbbbbbbbb2'] });
  // Assess
  assert.deepEqual(byTag.map((v) => v.vmId), ['i-0aaaaaaaaaaaaaaa1']);
  assert.equal(byTag[0]!.name, 'web-1');
  assert.equal(byTag[0]!.region, REGION);
  assert.deepEqual(byTag[0]!.disks.map((d) => [d.device, d.sizeBytes / 1024 ** 3]), [['/dev/xvda', 8], ['/dev/xvdf', 100]]);
  assert.deepEqual(byId.map((v) => v.name), ['db-1']);
});

test('findVms: an instance id that does not exist is a NotFoundError naming it', async () => {
  const { snapshots } = setup();
  await assert.rejects(snapshots.findVms({ ids: ['i-0ddddddddddddddd4'] }), (e: Error) => e instanceof NotFoundError && /i-0ddddddddddddddd4/.test(e.message));
});

test('createSnapshotSet: one CreateSnapshots for all volumes, tagged as one set; a re-run returns the same set', async () => {
  // Prepare
  const { snapshots } = setup();
  const [vm] = await snapshots.findVms({ ids: ['i-0aaaaaaaaaaaaaaa1'] });
  // Act
  const first = await snapshots.createSnapshotSet({ runId: 'r1', vm: vm!, tags: { 'tender:policy': 'web', 'tender:appliance': 'acme' } });
  const again = await snapshots.createSnapshotSet({ runId: 'r1', vm: vm!, tags: { 'tender:policy': 'web', 'tender:appliance': 'acme' } });
  // Assess
  assert.equal(fake.mocks.ec2.commandCalls(CreateSnapshotsCommand).length, 1, 'no second set');
  assert.equal(first.setId, again.setId);
  assert.equal(first.state, 'pending');
  assert.equal(first.disks.length, 2);
  assert.deepEqual(first.disks.map((d) => d.device), ['/dev/xvda', '/dev/xvdf']);
  const snaps = [...fake.world.snapshots.values()];
  assert.equal(snaps.length, 2);
  for (const s of snaps) {
    assert.equal(s.tags['tender:set'], first.setId);
    assert.equal(s.tags['tender:run'], 'r1');
    assert.equal(s.tags['tender:vm'], vm!.vmId);
    assert.equal(s.tags['tender:appliance'], 'acme');
    assert.ok(s.tags['tender:device'], 'device recorded for restore');
  }
});

test('getSnapshotSet: pending, then ready once every snapshot completed', async () => {
  const { snapshots } = setup({ snapshotPolls: 1 });
  const [vm] = await snapshots.findVms({ ids: ['i-0aaaaaaaaaaaaaaa1'] });
  const set = await snapshots.createSnapshotSet({ runId: 'r1', vm: vm!, tags: {} });
  assert.equal((await snapshots.getSnapshotSet(set.setId)).state, 'pending');
  const ready = await snapshots.getSnapshotSet(set.setId);
  assert.equal(ready.state, 'ready');
  assert.equal(ready.vmId, vm!.vmId);
  assert.equal(ready.runId, 'r1');
  assert.deepEqual(ready.disks.map((d) => d.device), ['/dev/xvda', '/dev/xvdf'], 'devices read back from the tags');
});

test('a snapshot in `error` fails the whole set: the state says why, waiting throws SnapshotFailedError at once, and checkSnapshot fails the VM', async () => {
  // Prepare
  const { snapshots, clock } = setup({ snapshotPolls: 100 });
  const [vm] = await snapshots.findVms({ ids: ['i-0aaaaaaaaaaaaaaa1'] });
  const set = await snapshots.createSnapshotSet({ runId: 'r1', vm: vm!, tags: {} });
  const broken = [...fake.world.snapshots.values()][1]!;
  broken.state = 'error';
  broken.stateMessage = 'Internal error while copying volume data';
  // Act
  const state = await snapshots.getSnapshotSet(set.setId);
  // Assess
  assert.equal(state.state, 'failed');
  assert.match(state.failureReason!, new RegExp(`${broken.id}.*Internal error`));
  await assert.rejects(snapshots.waitForSnapshotSet(set.setId, { pollMs: 1000 }), SnapshotFailedError);
  const deps = { cloud: { snapshots } as any, clock };
  await assert.rejects(
    runCheckSnapshot({ run: runContext(), vm: vm!, snapshot: { setId: set.setId, state: 'pending', ready: false, createdAt: set.createdAt, disks: set.disks, deadline: '2099-01-01T00:00:00Z' } }, deps),
    SnapshotFailedError,
  );
});

test('listSnapshotSets groups a VM\'s snapshots into sets, oldest first; deleteSnapshotSet removes them and ignores what is already gone', async () => {
  // Prepare
  const { snapshots, clock } = setup({ snapshotPolls: 0 });
  const [vm] = await snapshots.findVms({ ids: ['i-0aaaaaaaaaaaaaaa1'] });
  const s1 = await snapshots.createSnapshotSet({ runId: 'r1', vm: vm!, tags: {} });
  clock.advance(60_000);
  const fakeNow = new Date(clock.now());
  for (const s of fake.world.snapshots.values()) if (s.tags['tender:run'] !== 'r1') s.start = fakeNow;
  const s2 = await snapshots.createSnapshotSet({ runId: 'r2', vm: vm!, tags: {} });
  for (const s of fake.world.snapshots.values()) if (s.tags['tender:run'] === 'r2') s.start = new Date(Date.parse('2030-01-01T00:00:00Z'));
  // Act
  const sets = await snapshots.listSnapshotSets(vm!.vmId);
  const oneGone = [...fake.world.snapshots.values()].find((s) => s.tags['tender:set'] === s1.setId)!;
  fake.world.snapshots.delete(oneGone.id);
  await snapshots.deleteSnapshotSet(s1.setId);
  await snapshots.deleteSnapshotSet('ss-never-made');
  // Assess
  assert.deepEqual(sets.map((s) => s.setId), [s1.setId, s2.setId]);
  assert.deepEqual(sets.map((s) => s.disks.length), [2, 2]);
  assert.ok([...fake.world.snapshots.values()].every((s) => s.tags['tender:set'] !== s1.setId), 'set s1 gone');
  assert.deepEqual((await snapshots.listSnapshotSets(vm!.vmId)).map((s) => s.setId).includes(s2.setId), true);
});

test('SDK errors become named errors: throttling → TransientError (retried by the state machine), UnauthorizedOperation → AccessDeniedError with the permission to grant', async () => {
  const { snapshots } = setup();
  const [vm] = await snapshots.findVms({ ids: ['i-0aaaaaaaaaaaaaaa1'] });
  fake.fail(DescribeSnapshotsCommand, awsError('RequestLimitExceeded', 'Request limit exceeded.', 503));
  await assert.rejects(snapshots.createSnapshotSet({ runId: 'r9', vm: vm!, tags: {} }), TransientError);
  fake.fail(DescribeInstancesCommand, awsError('ThrottlingException', 'Rate exceeded'));
  await assert.rejects(snapshots.findVms({ tags: { backup: 'web' } }), TransientError);
  fake.fail(CreateSnapshotsCommand, awsError('UnauthorizedOperation', 'You are not authorized to perform this operation.', 403));
  await assert.rejects(snapshots.createSnapshotSet({ runId: 'r8', vm: vm!, tags: {} }), (e: Error) => e instanceof AccessDeniedError && /ec2:CreateSnapshots/.test(e.message));
});
