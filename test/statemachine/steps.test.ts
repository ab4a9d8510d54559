// Steps called directly, as an entry point would, over the in-memory ports.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runPlanBackup } from '../../functions/plan-backup/step.js';
import { runSnapshot } from '../../functions/snapshot/step.js';
import { runCheckSnapshot } from '../../functions/check-snapshot/step.js';
import { runDeployWorker } from '../../functions/deploy-worker/step.js';
import { runCheckWorker } from '../../functions/check-worker/step.js';
import { runStartBackup } from '../../functions/start-backup/step.js';
import { runCleanup, describeCaught } from '../../functions/cleanup/step.js';
import { fixedClock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import { SnapshotFailedError, TimedOutError, WorkerFailedError } from '../../shared/core/errors.js';
import { createFakeCloud, fakeVm, testPolicy } from './fake-cloud.js';

async function planned(pendingPolls = 5) {
  const fake = createFakeCloud([fakeVm('vm-a', [8])], { pendingPolls });
  const clock = fixedClock('2024-01-01T00:00:00Z');
  const deps = { cloud: fake.cloud, restorePoints: fake.restorePoints, clock, logger: silentLogger };
  const plan = await runPlanBackup({ runId: 'r1', applianceId: 'acme', policy: { ...testPolicy, worker: { ...testPolicy.worker, placement: { local: { subnet: 'sn-1' } } } } }, deps);
  return { ...fake, deps, clock, run: plan.run, vm: plan.vms[0]! };
}

test('planBackup: selects VMs once, fills the run context, and makes a run id when none is given', async () => {
  const fake = createFakeCloud([fakeVm('vm-a'), fakeVm('vm-b')]);
  const deps = { cloud: fake.cloud, clock: fixedClock('2024-05-01T02:00:00Z'), logger: silentLogger };
  const out = await runPlanBackup({ applianceId: 'acme', policy: { ...testPolicy, vms: { ids: ['vm-a'], tags: { env: 'test' } } } }, deps);
  assert.deepEqual(out.vms.map((v) => v.vmId), ['vm-a', 'vm-b']);
  assert.match(out.run.runId, /^r20240501T020000Z-[0-9a-f]{6}$/);
  assert.equal(out.run.policy, 'web');
  assert.match(out.run.policyId, /^pol-/);
  assert.equal(out.maxConcurrency, 4);
});

test('checkSnapshot: pending past its deadline times out; a failed set fails with its reason', async () => {
  const { deps, clock, run, vm, world } = await planned();
  const snap = await runSnapshot({ run, vm }, deps);
  assert.equal(snap.ready, false);
  clock.advance(7 * 3600 * 1000);
  await assert.rejects(runCheckSnapshot({ run, vm, snapshot: snap }, deps), TimedOutError);
  world.sets.get(snap.setId)!.state = 'failed';
  world.sets.get(snap.setId)!.failureReason = 'disk detached';
  await assert.rejects(runCheckSnapshot({ run, vm, snapshot: snap }, deps), (e: Error) => e instanceof SnapshotFailedError && /disk detached/.test(e.message));
});

test('deployWorker: sized by total disk size, placed in the region, tagged; checkWorker fails a vanished worker', async () => {
  const { deps, run, vm, world } = await planned();
  const w = await runDeployWorker({ run, vm }, deps);
  assert.equal(w.profile, 'small');
  assert.equal(w.instanceType, 'process-small');
  assert.equal(world.workers.get(w.workerId)!.tags.Name, 'tender-web');
  world.workers.get(w.workerId)!.state = 'gone';
  await assert.rejects(runCheckWorker({ run, vm, worker: w }, deps), WorkerFailedError);
});

test('startBackup: a parent set that no longer exists means a full read, said so', async () => {
  const { deps, run, vm, world } = await planned(0);
  world.runs.push({ runId: 'r0', policy: 'web', vmId: 'vm-a', outcome: 'succeeded', snapshotSetId: 'ss-gone', finishedAt: '2023-12-31T00:00:00Z' });
  const snapshot = await runSnapshot({ run, vm }, deps);
  const worker = await runDeployWorker({ run, vm }, deps);
  const job = await runStartBackup({ run, vm, snapshot, worker }, deps);
  assert.equal(job.parentSnapshotSetId, undefined);
  assert.match(job.parentNote!, /ss-gone no longer exists: full read/);
  assert.equal(world.jobs.get(job.jobId)!.job.disks[0]!.parentSnapshotId, undefined);
});

test('cleanup: finds the run\'s snapshot set by its tags even when the step result was lost, and is idempotent', async () => {
  const { deps, run, vm, world } = await planned(0);
  await runSnapshot({ run, vm }, deps);
  const worker = await runDeployWorker({ run, vm }, deps);
  const input = { run, vm, worker, failedStep: 'deployWorker', error: { Error: 'CapacityError', Cause: JSON.stringify({ errorType: 'CapacityError', errorMessage: 'no c5.large in eu-west-1a', trace: [] }) } };
  const first = await runCleanup(input, deps);
  const second = await runCleanup(input, deps);
  assert.equal(first.cleanup?.snapshotSetDeleted, 'ss-r1-vm-a');
  assert.deepEqual(first.error, { name: 'CapacityError', message: 'no c5.large in eu-west-1a' });
  assert.equal(second.outcome, 'failed');
  assert.equal(world.sets.size, 0);
  assert.equal(world.workers.get(worker.workerId)!.state, 'gone');
  assert.equal(world.runs.filter((r) => r.vmId === 'vm-a').length, 1, 'one record per run and VM');
});

test('cleanup: reads the cause the way Lambda and the local runner write it', () => {
  assert.deepEqual(describeCaught({ Error: 'X', Cause: 'plain message' }), { name: 'X', message: 'plain message' });
  assert.deepEqual(describeCaught({ Error: 'X', Cause: '{"errorMessage":"m","errorType":"X"}' }), { name: 'X', message: 'm' });
  assert.deepEqual(describeCaught({ Error: 'States.Timeout' }), { name: 'States.Timeout', message: '(no cause given)' });
});

test('polls wait longer as a stage goes on, so a 24 h backup fits a Step Functions history', async () => {
  const { pollOf, pollWaitSeconds } = await import('../../shared/core/pipeline.js');
  const { STEP } = await import('../../shared/core/pipeline.js');
  const { deps, clock, run, vm } = await planned(1_000_000);
  // The snapshot's first wait is its interval; later ones grow with the time already waited, to the ceiling.
  const snap = await runSnapshot({ run, vm }, deps);
  assert.equal(snap.waitSeconds, 15);
  clock.advance(10 * 60 * 1000);
  assert.equal((await runCheckSnapshot({ run, vm, snapshot: snap }, deps)).waitSeconds, 30);
  clock.advance(3 * 3600 * 1000);
  assert.equal((await runCheckSnapshot({ run, vm, snapshot: snap }, deps)).waitSeconds, 60);
  // Polls of a backup that runs to its 24 h deadline: each about 9 history events (Choice, Wait, Task).
  const poll = pollOf(STEP.checkBackup);
  let polls = 0;
  for (let t = 0; t < poll.timeoutSeconds; t += pollWaitSeconds(poll, t)) polls++;
  assert.ok(polls * 9 < 10_000, `${polls} polls`);
  assert.ok(poll.timeoutSeconds / poll.pollSeconds * 9 > 25_000, 'at a fixed interval it would not fit');
});
