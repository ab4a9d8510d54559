// The state machine executed by the local runner (aws-local-stepfunctions)
// over in-memory ports: the happy path, an incremental second run, and a
// failure injected at each step — each must end in cleanup that leaves no
// worker, no live grant and no orphan snapshot set, and records the step.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { executeBackup } from '../../shared/local/runner.js';
import { PER_VM_STAGES, STEP, type StepName } from '../../shared/core/pipeline.js';
import { TransientError, WorkerFailedError } from '../../shared/core/errors.js';
import { fixedClock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import { PolicySchema } from '../../shared/core/config.js';
import { createFakeCloud, fakeVm, testPolicy } from './fake-cloud.js';

function setup(pendingPolls = 1) {
  const vms = [fakeVm('vm-a', [8]), fakeVm('vm-b', [2000, 100])];
  const fake = createFakeCloud(vms, { pendingPolls });
  const deps = { cloud: fake.cloud, restorePoints: fake.restorePoints, clock: fixedClock('2024-01-01T00:00:00Z'), logger: silentLogger };
  const policy = PolicySchema.parse(testPolicy);
  return { ...fake, deps, policy };
}

test('run: every VM is backed up and the output lists each outcome and restore point', async () => {
  // Prepare
  const { deps, policy, world } = setup();
  // Act
  const s = await executeBackup({ deps, input: { runId: 'r1', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1 });
  // Assess
  assert.equal(s.ok, true);
  assert.deepEqual(s.vms.map((v) => [v.vmId, v.outcome, v.restorePointId]), [
    ['vm-a', 'succeeded', 'rp-r1-vm-a'],
    ['vm-b', 'succeeded', 'rp-r1-vm-b'],
  ]);
  assert.ok([...world.workers.values()].every((w) => w.state === 'gone'), 'no worker left');
  assert.ok(world.grants.every((g) => !g.live), 'every grant revoked');
  assert.deepEqual(world.runs.map((r) => r.outcome), ['succeeded', 'succeeded']);
  // Profiles by total disk size; tags rendered.
  assert.equal(world.workers.get('w-r1-vm-a')!.profile, 'small');
  assert.equal(world.workers.get('w-r1-vm-b')!.profile, 'medium');
  assert.equal(world.workers.get('w-r1-vm-a')!.tags.Name, 'tender-web');
  assert.equal(world.workers.get('w-r1-vm-a')!.tags['tender:run'], 'r1');
});

test('run: the second run hands the worker the parent snapshot set and is incremental; retention forgets the older point', async () => {
  const { deps, policy, world } = setup(0);
  await executeBackup({ deps, input: { runId: 'r1', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1 });
  const s2 = await executeBackup({ deps, input: { runId: 'r2', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1 });
  assert.ok(s2.vms.every((v) => v.incremental === true));
  assert.ok(s2.vms.every((v) => (v.bytesRead ?? 0) < (v.bytesTotal ?? 0)));
  const job = world.jobs.get('job-r2-vm-a')!.job;
  assert.equal(job.parentSnapshotSetId, 'ss-r1-vm-a');
  // daily: 1 keeps one point per VM; the older set is no longer needed as a parent.
  assert.deepEqual(world.forgotten.sort(), ['rp-r1-vm-a', 'rp-r1-vm-b']);
  assert.deepEqual([...world.sets.keys()].sort(), ['ss-r2-vm-a', 'ss-r2-vm-b']);
  assert.ok(!('error' in s2.retention) && s2.retention.snapshotSetsDeleted.length === 2);
});

test('run: retention never deletes the snapshot set of a run that has not finished (overlapping schedules)', async () => {
  const { deps, policy, world } = setup(0);
  await executeBackup({ deps, input: { runId: 'r1', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1 });
  // An older run of the same policy still reading its set: no outcome recorded yet.
  world.sets.set('ss-slow-vm-a', { setId: 'ss-slow-vm-a', vmId: 'vm-a', region: 'local', runId: 'r-slow', state: 'ready', createdAt: '2000-01-01T00:00:00.000Z', disks: [], tags: { 'tender:policy': policy.name } });
  await executeBackup({ deps, input: { runId: 'r2', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1 });
  assert.ok(world.sets.has('ss-slow-vm-a'), 'the unfinished run keeps its set');
  assert.ok(!world.sets.has('ss-r1-vm-a'), 'finished runs’ old sets still go');
});

const injectable: StepName[] = PER_VM_STAGES.flatMap((s) => (s.poll ? [s.step, s.poll.step] : [s.step])).filter((s) => s !== STEP.recordOutcome);

for (const step of injectable) {
  test(`run: a failure at ${step} runs cleanup — no worker, no live grant, snapshot set deleted unless backed up, failure recorded with the step`, async () => {
    // Prepare
    const { deps, policy, world } = setup();
    // Act
    const s = await executeBackup({
      deps,
      input: { runId: 'r1', applianceId: 'acme', policy },
      waitMs: 1,
      retryMs: 1,
      inject: [{ step, vmId: 'vm-a', error: () => new WorkerFailedError(`injected at ${step}`) }],
    });
    // Assess
    const a = s.vms.find((v) => v.vmId === 'vm-a')!;
    assert.equal(s.ok, false);
    assert.equal(a.outcome, 'failed');
    assert.equal(a.step, step);
    assert.deepEqual(a.error, { name: 'WorkerFailedError', message: `injected at ${step}` });
    assert.equal(s.vms.find((v) => v.vmId === 'vm-b')!.outcome, 'succeeded', 'the other VM carries on');
    const wa = world.workers.get('w-r1-vm-a');
    assert.ok(!wa || wa.state === 'gone', 'worker removed');
    assert.ok(world.grants.filter((g) => g.vmId === 'vm-a').every((g) => !g.live), 'grants revoked');
    // Once the worker reported a restore point, its snapshot set is the next run's parent: kept.
    const madeRestorePoint = step === STEP.revokeAccess || step === STEP.deallocateWorker;
    assert.equal([...world.sets.values()].some((x) => x.vmId === 'vm-a'), madeRestorePoint, madeRestorePoint ? 'snapshot set kept' : 'snapshot set deleted');
    const rec = world.runs.find((r) => r.vmId === 'vm-a')!;
    assert.equal(rec.outcome, 'failed');
    assert.equal(rec.step, step);
    assert.match(rec.error!.message, new RegExp(`injected at ${step}`));
  });
}

test('run: a failure after the restore point exists keeps the snapshot set (next parent) and still removes the worker', async () => {
  const { deps, policy, world } = setup(0);
  const s = await executeBackup({ deps, input: { runId: 'r1', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1, inject: [{ step: STEP.deallocateWorker, vmId: 'vm-a', error: () => new WorkerFailedError('stuck') }] });
  const a = s.vms.find((v) => v.vmId === 'vm-a')!;
  assert.equal(a.outcome, 'failed');
  assert.equal(a.restorePointId, 'rp-r1-vm-a');
  assert.equal(a.cleanup?.snapshotSetKept, 'ss-r1-vm-a');
  assert.ok(world.sets.has('ss-r1-vm-a'));
  assert.equal(world.workers.get('w-r1-vm-a')!.state, 'gone');
});

test('run: a retryable error is retried and the run succeeds; a worker-reported failure is not retried', async () => {
  const { deps, policy, world } = setup(0);
  let calls = 0;
  const orig = deps.cloud.workers.deployWorker;
  deps.cloud.workers.deployWorker = async (req) => {
    if (++calls === 1) throw new TransientError('throttled');
    return orig(req);
  };
  const getJob = deps.cloud.channel.getJobStatus;
  let polls = 0;
  deps.cloud.channel.getJobStatus = async (ref, jobId) => {
    if (jobId.endsWith('vm-b')) {
      polls++;
      return { state: 'failed', error: { name: 'AccessDeniedError', message: 'no write access to the bucket' }, updatedAt: '' };
    }
    return getJob(ref, jobId);
  };
  const s = await executeBackup({ deps, input: { runId: 'r1', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1 });
  assert.equal(s.vms.find((v) => v.vmId === 'vm-a')!.outcome, 'succeeded');
  const b = s.vms.find((v) => v.vmId === 'vm-b')!;
  assert.equal(b.step, 'checkBackup');
  assert.match(b.error!.message, /AccessDeniedError: no write access/);
  assert.equal(polls, 1, 'not retried');
  assert.equal(world.workers.get('w-r1-vm-b')!.state, 'gone');
});

test('run: cleanup that fails once is retried until it holds', async () => {
  const { deps, policy, world } = setup(0);
  const revoke = deps.cloud.access.revokeAccess;
  let n = 0;
  deps.cloud.access.revokeAccess = async (req) => {
    if (req.vmId === 'vm-a' && ++n === 1) throw new TransientError('revoke throttled');
    return revoke(req);
  };
  const s = await executeBackup({ deps, input: { runId: 'r1', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1, inject: [{ step: STEP.installWorker, vmId: 'vm-a', error: () => new WorkerFailedError('x') }] });
  const a = s.vms.find((v) => v.vmId === 'vm-a')!;
  assert.equal(a.step, 'installWorker');
  assert.deepEqual(a.cleanup?.problems, []);
  assert.ok(n >= 2);
  assert.ok(world.grants.filter((g) => g.vmId === 'vm-a').every((g) => !g.live));
});

test('run: a policy whose VM id does not exist fails the run with a message naming it', async () => {
  const { deps } = setup();
  const policy = PolicySchema.parse({ ...testPolicy, vms: { ids: ['vm-zzz'] } });
  await assert.rejects(executeBackup({ deps, input: { runId: 'r1', applianceId: 'acme', policy }, waitMs: 1, retryMs: 1 }), /vm-zzz/);
});
