// The Durable orchestrator driven by a fake durable context: the happy path,
// a failure at every per-VM step (cleanup always revokes and deallocates),
// retries of the retryable names behind durable timers, cleanup that fails,
// bounded concurrency and replay determinism.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CapacityError, ConfigError, TransientError, WorkerFailedError } from '../../shared/core/errors.js';
import { PER_VM_STAGES, STEP, perVmStepOrder } from '../../shared/core/pipeline.js';
import { caughtError, replaySafeUnit, retryDelaySeconds, STEP_RETRY } from '../../azure/orchestrator.js';
import { fakeVm } from '../statemachine/fake-cloud.js';
import { durableRun } from './support.js';

const PER_VM_STEPS = PER_VM_STAGES.flatMap((s) => (s.poll ? [s.step, s.poll.step] : [s.step]));

function assertNothingLeft(world: ReturnType<typeof durableRun>['world']) {
  assert.deepEqual(world.grants.filter((g) => g.live), [], 'no URL, SAS or credential is left live');
  assert.deepEqual([...world.workers.entries()].filter(([, w]) => w.state !== 'gone').map(([id]) => id), [], 'no worker is left running');
}

test('orchestrator: every VM is backed up through the spec steps, polls wait on durable timers, nothing is left behind', async () => {
  // Prepare
  const r = durableRun();
  // Act
  const out = await r.run();
  // Assess
  assert.equal(out.runId, 'r1');
  assert.deepEqual(out.vms.map((v) => [v.vmId, v.outcome]), [['vm-a', 'succeeded'], ['vm-b', 'succeeded']]);
  assert.ok(out.vms.every((v) => v.restorePointId?.startsWith('rp-r1-')));
  assert.deepEqual((out.retention as { removed: unknown[] }).removed, []);
  for (const vmId of ['vm-a', 'vm-b']) {
    const acting = r.calls.filter((c) => c.vmId === vmId && perVmStepOrder().includes(c.step as never)).map((c) => c.step);
    assert.deepEqual(acting, perVmStepOrder(), `${vmId}: acting steps in spec order`);
  }
  assert.equal(r.calls[0]!.step, STEP.planBackup);
  assert.equal(r.calls.at(-1)!.step, STEP.applyRetention);
  assert.ok(!r.calls.some((c) => c.step === STEP.cleanup), 'no cleanup on the happy path');
  // Each poll happened after a timer of its stage's interval.
  const a = r.calls.filter((c) => c.vmId === 'vm-a');
  const t = (step: string) => Date.parse(a.find((c) => c.step === step)!.at);
  assert.equal(t(STEP.checkSnapshot) - t(STEP.snapshot), 15_000);
  assert.equal(t(STEP.checkWorker) - t(STEP.deployWorker), 10_000);
  assert.equal(t(STEP.checkBackup) - t(STEP.startBackup), 30_000);
  assertNothingLeft(r.world);
  assert.equal(r.world.runs.filter((x) => x.outcome === 'succeeded').length, 2, 'both successes are in the catalog');
});

for (const step of PER_VM_STEPS) {
  test(`orchestrator: a failure at ${step} takes the cleanup path — access revoked, worker deallocated, failure recorded; the other VM is unaffected`, async () => {
    // Prepare
    const r = durableRun({ inject: [{ step, vmId: 'vm-a', error: () => new WorkerFailedError(`injected failure in ${step}`) }] });
    // Act
    const out = await r.run();
    // Assess
    const a = out.vms.find((v) => v.vmId === 'vm-a')!;
    assert.equal(a.outcome, 'failed');
    assert.equal(a.step, step, 'the outcome names the failed step');
    assert.deepEqual(a.error, { name: 'WorkerFailedError', message: `injected failure in ${step}` });
    assert.ok(a.cleanup, 'cleanup ran');
    assert.equal(a.cleanup!.workerRemoved, true);
    assert.deepEqual(a.cleanup!.problems, []);
    const cleanupCall = r.calls.find((c) => c.step === STEP.cleanup && c.vmId === 'vm-a')!;
    assert.equal(cleanupCall.input.failedStep, step);
    assert.deepEqual(cleanupCall.input.error, { Error: 'WorkerFailedError', Cause: `injected failure in ${step}` });
    assert.equal(r.calls.filter((c) => c.step === step && c.vmId === 'vm-a').length, 1, 'a non-retryable error is not retried');
    assertNothingLeft(r.world);
    const rec = r.world.runs.find((x) => x.vmId === 'vm-a')!;
    assert.equal(rec.outcome, 'failed');
    assert.equal(rec.step, step);
    // No restore point before checkBackup succeeded: the run's snapshot set is deleted.
    const rpMade = PER_VM_STEPS.indexOf(step) > PER_VM_STEPS.indexOf(STEP.checkBackup);
    assert.equal([...r.world.sets.values()].some((s) => s.vmId === 'vm-a'), rpMade, rpMade ? 'the set a restore point was made from is kept' : 'the set is deleted');
    assert.equal(out.vms.find((v) => v.vmId === 'vm-b')!.outcome, 'succeeded');
  });
}

test('orchestrator: retryable names are retried behind growing durable timers; a success after retries is a success', async () => {
  // Prepare
  const r = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step: STEP.deployWorker, times: 3, error: () => new CapacityError('no F2s_v2 left in westeurope') }] });
  // Act
  const out = await r.run();
  // Assess
  assert.equal(out.vms[0]!.outcome, 'succeeded');
  const deploys = r.calls.filter((c) => c.step === STEP.deployWorker).map((c) => Date.parse(c.at));
  assert.equal(deploys.length, 4);
  for (let i = 1; i < deploys.length; i++) {
    const waited = (deploys[i]! - deploys[i - 1]!) / 1000;
    assert.ok(waited >= 1 && waited <= Math.min(STEP_RETRY.maxDelaySeconds, STEP_RETRY.intervalSeconds * STEP_RETRY.backoffRate ** (i - 1)), `retry ${i} waited ${waited}s`);
  }
  assertNothingLeft(r.world);
});

test('orchestrator: a retryable error that never clears fails the step after the ASL\'s number of attempts, then cleans up', async () => {
  // Prepare
  const r = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step: STEP.installWorker, error: () => new TransientError('Azure answered 503') }] });
  // Act
  const out = await r.run();
  // Assess
  assert.equal(r.calls.filter((c) => c.step === STEP.installWorker).length, STEP_RETRY.maxAttempts);
  assert.equal(out.vms[0]!.step, STEP.installWorker);
  assert.equal(out.vms[0]!.error!.name, 'TransientError');
  assertNothingLeft(r.world);
});

test('orchestrator: older hosts hand failures back as "Reason \\n Details" text — the error name is still found', async () => {
  // Prepare
  const r = durableRun({ vms: [fakeVm('vm-a')], failureStyle: 'legacy', inject: [{ step: STEP.startBackup, error: () => new ConfigError('repository URL is not valid') }] });
  // Act
  const out = await r.run();
  // Assess
  assert.equal(out.vms[0]!.step, STEP.startBackup);
  assert.deepEqual(out.vms[0]!.error, { name: 'ConfigError', message: 'repository URL is not valid\n    at activity (index.js:1:1)' });
  assertNothingLeft(r.world);
});

test('orchestrator: cleanup that fails transiently is retried until it holds; cleanup that keeps failing still ends the VM with both errors', async () => {
  // Prepare
  const once = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step: STEP.checkWorker, error: () => new WorkerFailedError('worker vanished') }, { step: STEP.cleanup, times: 2, error: () => new TransientError('state container busy') }] });
  const always = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step: STEP.checkWorker, error: () => new WorkerFailedError('worker vanished') }, { step: STEP.cleanup, error: () => new TransientError('state container busy') }] });
  // Act
  const a = (await once.run()).vms[0]!;
  const b = (await always.run()).vms[0]!;
  // Assess
  assert.equal(a.cleanup?.workerRemoved, true);
  assertNothingLeft(once.world);
  assert.equal(always.calls.filter((c) => c.step === STEP.cleanup).length, 8, 'cleanup gets the ASL\'s 8 attempts');
  assert.equal(b.outcome, 'failed');
  assert.equal(b.step, STEP.checkWorker);
  assert.deepEqual(b.error, { name: 'WorkerFailedError', message: 'worker vanished' });
  assert.match(b.cleanup!.problems[0]!, /cleanup did not complete: TransientError: state container busy/);
});

test('orchestrator: a cleanup the host stopped at functionTimeout is tried again; other steps\' timeouts are not retried', async () => {
  // Prepare
  const timeout = () => Object.assign(new Error('Timeout value of 00:10:00 was exceeded by function: Functions.cleanup'), { name: 'Microsoft.Azure.WebJobs.Host.FunctionTimeoutException' });
  const r = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step: STEP.checkWorker, error: () => new WorkerFailedError('worker vanished') }, { step: STEP.cleanup, times: 2, error: timeout }] });
  const other = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step: STEP.installWorker, error: timeout }] });
  // Act
  const a = (await r.run()).vms[0]!;
  const b = (await other.run()).vms[0]!;
  // Assess
  assert.equal(r.calls.filter((c) => c.step === STEP.cleanup).length, 3);
  assert.equal(a.cleanup?.workerRemoved, true);
  assertNothingLeft(r.world);
  assert.equal(other.calls.filter((c) => c.step === STEP.installWorker).length, 1);
  assert.equal(b.step, STEP.installWorker);
  assertNothingLeft(other.world);
});

test('orchestrator: a VM orchestration the host fails mid-run is cleaned up by the run: no worker or grant is left', async () => {
  // Prepare: the VM's orchestration dies after its worker is deployed and has read access.
  const r = durableRun({ vms: [fakeVm('vm-a')], crashVmAfterYields: 9 });
  // Act
  const out = await r.run();
  // Assess
  const vm = out.vms[0]!;
  assert.equal(vm.outcome, 'failed');
  assert.equal(vm.step, 'orchestration');
  assert.match(vm.error!.message, /Non-Deterministic/);
  assert.ok(r.calls.some((c) => c.step === STEP.deployWorker), 'the worker was deployed before the crash');
  assert.equal(r.calls.filter((c) => c.step === STEP.cleanup).length, 1);
  assert.equal(vm.cleanup?.workerRemoved, true);
  assertNothingLeft(r.world);
});

test('orchestrator: a plan that fails fails the run, naming the step', async () => {
  // Prepare
  const r = durableRun({ inject: [{ step: STEP.planBackup, error: () => new ConfigError('VM /subscriptions/x/…/vm9 does not exist') }] });
  // Act / Assess
  await assert.rejects(r.run(), /planBackup failed: ConfigError: VM .*vm9 does not exist/);
  assert.equal(r.calls.length, 1);
});

test('orchestrator: retention that fails is reported in the output; the VMs keep their outcomes', async () => {
  // Prepare
  const r = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step: STEP.applyRetention, error: () => new ConfigError('repository key unreadable') }] });
  // Act
  const out = await r.run();
  // Assess
  assert.equal(out.vms[0]!.outcome, 'succeeded');
  assert.deepEqual(out.retention, { error: { name: 'ConfigError', message: 'repository key unreadable' } });
});

test('orchestrator: at most maxConcurrency VMs are in flight, and outcomes keep the plan\'s VM order', async () => {
  // Prepare
  const vms = ['vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-5'].map((id) => fakeVm(id));
  const r = durableRun({ vms, maxConcurrency: 2 });
  // Act
  const out = await r.run();
  // Assess
  const waits = r.driver.history.filter((h) => h.type === 'any');
  assert.ok(waits.length >= vms.length);
  assert.ok(waits.every((w) => (w.pending ?? 0) <= 2), `in flight: ${waits.map((w) => w.pending).join(',')}`);
  assert.deepEqual(out.vms.map((v) => v.vmId), vms.map((v) => v.vmId));
  assert.ok(out.vms.every((v) => v.outcome === 'succeeded'));
});

test('orchestrator: replaying the same run schedules the same activities and timers (no wall clock, no randomness)', async () => {
  // Prepare
  const inject = [{ step: STEP.deployWorker, times: 2, error: () => new TransientError('429') }];
  const one = durableRun({ inject });
  const two = durableRun({ inject });
  // Act
  await one.run();
  await two.run();
  // Assess
  const trace = (r: typeof one) => r.driver.history.map((h) => `${h.type} ${h.instanceId} ${h.name ?? ''} ${h.at}`);
  assert.deepEqual(trace(one), trace(two));
});

test('caughtError finds the Tender error name in what the host hands back; jitter is replay-safe', () => {
  assert.deepEqual(caughtError({ name: 'TaskFailedError', message: 'x', failureDetails: { errorType: 'TransientError', errorMessage: 'TransientError: throttled' } }), { name: 'TransientError', message: 'throttled' });
  assert.deepEqual(caughtError(new Error('Exception while executing function: Functions.snapshot \n Error: CapacityError: quota')), { name: 'CapacityError', message: 'quota' });
  assert.deepEqual(caughtError(new TypeError('x is undefined')), { name: 'TypeError', message: 'x is undefined' });
  assert.equal(replaySafeUnit('i', 's', 1), replaySafeUnit('i', 's', 1));
  assert.notEqual(replaySafeUnit('i', 's', 1), replaySafeUnit('i', 's', 2));
  assert.equal(retryDelaySeconds(STEP_RETRY, 10, 0.999), 59);
  assert.equal(retryDelaySeconds(STEP_RETRY, 1, 0), 1);
});
