// One pipeline: the Durable orchestrator and statemachines/backup.asl.json
// sequence the same steps, pass each the same state, poll on the same flags
// and intervals, retry with the same policy and compensate the same failures,
// all as shared/core/pipeline.ts says.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { AFTER_VMS, BEFORE_VMS, CLEANUP_STEPS, PER_VM_STAGES, STEP, perVmStepOrder, type StepName } from '../../shared/core/pipeline.js';
import { RETRYABLE_ERROR_NAMES, WorkerFailedError } from '../../shared/core/errors.js';
import { DEFINITION_PATH, taskStates } from '../../shared/local/runner.js';
import { stateNameOf } from '../../functions/registry.js';
import { CLEANUP_RETRY, READY_FLAG, STAGE_IO, STEP_RETRY, activityNameOf } from '../../azure/orchestrator.js';
import { fakeVm } from '../statemachine/fake-cloud.js';
import { durableRun } from './support.js';

const def = JSON.parse(readFileSync(DEFINITION_PATH, 'utf8'));
const map = Object.values(def.States).find((s: any) => s.Type === 'Map') as any;
const iter = map.ItemProcessor;
const stepOfResource = (r: string) => r.split('-').pop() as StepName;

/** The ASL's per-VM Task states, by step. */
const aslTasks = new Map<StepName, any>(
  Object.values(iter.States)
    .filter((s: any) => s.Type === 'Task')
    .map((s: any) => [stepOfResource(s.Resource), s]),
);

/** Steps whose failure the ASL sends to cleanup (Catch → Pass naming the step → Cleanup). */
function aslCompensated(): StepName[] {
  const cleanupState = stateNameOf(CLEANUP_STEPS[0]!);
  return [...aslTasks.entries()]
    .filter(([step, s]) => step !== STEP.cleanup && s.Catch?.some((c: any) => c.ErrorEquals.includes('States.ALL') && iter.States[c.Next]?.Next === cleanupState))
    .map(([step]) => step);
}

test('parity: both run the same per-VM steps — the spec\'s acting steps and polls, nothing else', () => {
  const spec = PER_VM_STAGES.flatMap((s) => (s.poll ? [s.step, s.poll.step] : [s.step])).sort();
  assert.deepEqual([...aslTasks.keys()].filter((s) => s !== STEP.cleanup).sort(), spec);
  assert.deepEqual(Object.keys(STAGE_IO).sort(), spec);
});

test('parity: every step gets the same input and its result goes to the same place (ASL Parameters / ResultPath)', () => {
  for (const [step, io] of Object.entries(STAGE_IO)) {
    const s = aslTasks.get(step as StepName)!;
    assert.deepEqual(Object.keys(s.Parameters).map((k) => k.replace(/\.\$$/, '')).sort(), [...io.input].sort(), `${step} input`);
    assert.equal(s.ResultPath, `$.${io.result}`, `${step} result`);
  }
});

test('parity: a polled stage is done on the same flag and waits as its last poll says', () => {
  for (const stage of PER_VM_STAGES.filter((s) => s.poll)) {
    const check = aslTasks.get(stage.poll!.step)!;
    const choice = iter.States[check.Next];
    assert.equal(choice.Choices[0].Variable, `$.${STAGE_IO[stage.step]!.result}.${READY_FLAG[stage.step]}`, `${stage.step} ready flag`);
    assert.equal(iter.States[choice.Default].SecondsPath, `$.${STAGE_IO[stage.step]!.result}.waitSeconds`);
  }
});

test('parity: the same retry policy (names, interval, attempts, backoff, ceiling), cleanup with more attempts', () => {
  for (const [step, s] of aslTasks) {
    const r = s.Retry[0];
    const { alsoRetry, ...policy } = step === STEP.cleanup ? CLEANUP_RETRY : STEP_RETRY;
    assert.deepEqual(
      { intervalSeconds: r.IntervalSeconds, maxAttempts: r.MaxAttempts, backoffRate: r.BackoffRate, maxDelaySeconds: r.MaxDelaySeconds },
      policy,
      `${step} retry`,
    );
    // Only cleanup retries timeouts (its host's: Lambda / Step Functions there, functionTimeout here).
    assert.equal(!!alsoRetry?.length, step === STEP.cleanup, `${step} timeout retries`);
    assert.equal(r.ErrorEquals.includes('States.Timeout'), step === STEP.cleanup, `${step} ASL timeout retries`);
    for (const name of RETRYABLE_ERROR_NAMES) assert.ok(r.ErrorEquals.includes(name));
  }
});

test('parity: activity names are the steps the ASL\'s Lambda ARNs name', () => {
  for (const { step } of taskStates(def)) assert.equal(activityNameOf(step), step);
});

test('parity: the orchestrator runs plan first, the acting steps in the ASL\'s success order, retention last', async () => {
  // Walk the ASL's success path.
  const walked: StepName[] = [];
  let name: string | undefined = iter.StartAt;
  const seen = new Set<string>();
  while (name && !seen.has(name)) {
    seen.add(name);
    const s = iter.States[name];
    if (s.Type === 'Task') walked.push(stepOfResource(s.Resource));
    name = s.Type === 'Choice' ? s.Choices[0].Next : s.End ? undefined : s.Next;
  }
  const r = durableRun({ vms: [fakeVm('vm-a')] });
  await r.run();
  const acting = r.calls.map((c) => c.step).filter((s) => perVmStepOrder().includes(s as StepName));
  assert.deepEqual(acting, walked.filter((s) => perVmStepOrder().includes(s)));
  assert.equal(r.calls[0]!.step, BEFORE_VMS[0]);
  assert.equal(stepOfResource(def.States[def.StartAt].Resource), BEFORE_VMS[0]);
  assert.equal(r.calls.at(-1)!.step, AFTER_VMS[0]);
  assert.equal(stepOfResource(def.States[map.Next].Resource), AFTER_VMS[0]);
});

test('parity: the same failures are compensated — every step the ASL catches into cleanup, the orchestrator sends to cleanup too, naming it', async () => {
  const asl = aslCompensated().sort();
  for (const stage of PER_VM_STAGES.filter((s) => s.compensated)) {
    assert.ok(asl.includes(stage.step), `the ASL compensates ${stage.step}`);
    if (stage.poll) assert.ok(asl.includes(stage.poll.step), `the ASL compensates ${stage.poll.step}`);
  }
  const durable: StepName[] = [];
  for (const step of Object.keys(STAGE_IO) as StepName[]) {
    const r = durableRun({ vms: [fakeVm('vm-a')], inject: [{ step, error: () => new WorkerFailedError('boom') }] });
    await r.run();
    const cleanup = r.calls.find((c) => c.step === STEP.cleanup);
    if (cleanup) {
      assert.equal(cleanup.input.failedStep, step);
      durable.push(step);
    }
  }
  assert.deepEqual(durable.sort(), asl);
});
