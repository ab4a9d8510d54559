// The state machine file against the one pipeline spec: validated by
// asl-validator, JSONPath only, every acting step present and in order, every
// compensated step caught into cleanup with its name, retries on the
// retryable error names with backoff, jitter and a ceiling.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
// @ts-expect-error asl-validator ships no types for its ESM entry
import validate from 'asl-validator';
import { PER_VM_STAGES, CLEANUP_STEPS, BEFORE_VMS, AFTER_VMS, STEP, type StepName } from '../../shared/core/pipeline.js';
import { RETRYABLE_ERROR_NAMES } from '../../shared/core/errors.js';
import { DEFINITION_PATH, loadDefinition, taskStates } from '../../shared/local/runner.js';
import { folderOf, stateNameOf, STEPS } from '../../functions/registry.js';

const raw = readFileSync(DEFINITION_PATH, 'utf8');
const def = JSON.parse(raw);
const mapState = Object.values(def.States).find((s: any) => s.Type === 'Map') as any;
const iter = mapState.ItemProcessor;
const stepOfState = (states: Record<string, any>, name: string): StepName | undefined => {
  const s = states[name];
  return s?.Type === 'Task' ? (String(s.Resource).split('-').pop() as StepName) : undefined;
};

test('asl: the file as written and as the local runner sees it passes asl-validator (ARNs and paths checked)', () => {
  for (const d of [def, loadDefinition()]) {
    const res = validate(d, { checkArn: true, checkPaths: true });
    assert.equal(res.isValid, true, res.errorsText?.());
  }
});

test('asl: JSONPath only — no JSONata, Assign, Arguments or Output, so the local runner executes it as AWS does', () => {
  for (const word of ['QueryLanguage', 'JSONata', '"Assign"', '"Arguments"', '"Output"', '{%']) assert.ok(!raw.includes(word), `found ${word}`);
});

test('asl: Resources are Lambda ARNs the deploy resolves (#{AWS::…} pseudo parameters, ${sls:stage}), one per step', () => {
  for (const { name, step } of taskStates(def)) {
    assert.equal(def.States[name]?.Resource ?? iter.States[name].Resource, `arn:aws:lambda:#{AWS::Region}:#{AWS::AccountId}:function:\${self:service}-\${sls:stage}-${step}`);
    assert.equal(name, stateNameOf(step), 'state named after its step');
  }
});

test('asl: every step of the spec has functions/<kebab>/step.ts and schema.ts exporting run<Step>', async () => {
  for (const step of Object.values(STEP)) {
    const dir = join(import.meta.dirname, '..', '..', 'functions', folderOf(step));
    assert.ok(existsSync(join(dir, 'step.ts')) && existsSync(join(dir, 'schema.ts')), `functions/${folderOf(step)}/`);
    const mod = await import(join(dir, 'step.ts'));
    assert.equal(typeof mod[`run${stateNameOf(step)}`], 'function');
    assert.ok(STEPS[step]);
  }
});

test('asl: plan before the VMs, a Map over them with MaxConcurrency from the input, retention after', () => {
  assert.equal(stepOfState(def.States, def.StartAt), BEFORE_VMS[0]);
  assert.equal(def.States[def.StartAt].Next, Object.keys(def.States).find((k) => def.States[k] === mapState));
  assert.equal(mapState.MaxConcurrencyPath, '$.maxConcurrency');
  assert.equal(mapState.ItemsPath, '$.vms');
  assert.equal(stepOfState(def.States, mapState.Next), AFTER_VMS[0]);
  const summarize = def.States[def.States[mapState.Next].Next];
  assert.equal(summarize.End, true);
  assert.ok(summarize.Parameters['vms.$'] && summarize.Parameters['retention.$'], 'output lists the VM outcomes and retention');
});

test('asl: per VM, the acting and polling steps run in the spec order, polls looping through a Wait', () => {
  // Walk the success path: Choices take the branch that moves on.
  const seen: string[] = [];
  let name: string | undefined = iter.StartAt;
  const visited = new Set<string>();
  while (name && !visited.has(name)) {
    visited.add(name);
    const s = iter.States[name];
    if (s.Type === 'Task') seen.push(stepOfState(iter.States, name)!);
    name = s.Type === 'Choice' ? s.Choices[0].Next : s.End ? undefined : s.Next;
  }
  const expected = PER_VM_STAGES.flatMap((st) => (st.poll ? [st.step, st.poll.step] : [st.step]));
  // A poll step is skipped on the success path when the acting step already reports ready; it sits in the loop.
  const acting = seen.filter((s) => PER_VM_STAGES.some((st) => st.step === s));
  assert.deepEqual(acting, PER_VM_STAGES.map((s) => s.step));
  for (const st of PER_VM_STAGES.filter((x) => x.poll)) {
    const check = iter.States[stateNameOf(st.poll!.step)];
    const choice = iter.States[check.Next];
    assert.equal(choice.Type, 'Choice', `${st.poll!.step} is followed by a Choice`);
    const wait = iter.States[choice.Default];
    assert.equal(wait.Type, 'Wait');
    // The wait is what the last poll said (pollWaitSeconds: it grows as the stage goes on).
    assert.equal(wait.SecondsPath, `${check.ResultPath}.waitSeconds`, `${st.step} waits as its poll says`);
    assert.equal(wait.Next, stateNameOf(st.poll!.step), 'the wait loops back to the poll');
  }
  assert.ok(expected.length > acting.length);
});

test('asl: every compensated step (and every poll) is caught into cleanup with $.error and its own step name', () => {
  const cleanupState = stateNameOf(CLEANUP_STEPS[0]!);
  const caughtSteps = PER_VM_STAGES.filter((s) => s.compensated).flatMap((s) => (s.poll ? [s.step, s.poll.step] : [s.step]));
  for (const step of caughtSteps) {
    const s = iter.States[stateNameOf(step)];
    const c = s.Catch?.find((x: any) => x.ErrorEquals.includes('States.ALL'));
    assert.ok(c, `${step} has a Catch for States.ALL`);
    assert.equal(c.ResultPath, '$.error');
    const pass = iter.States[c.Next];
    assert.equal(pass.Type, 'Pass');
    assert.equal(pass.Result, step, `the catch path names ${step}`);
    assert.equal(pass.ResultPath, '$.failedStep');
    assert.equal(pass.Next, cleanupState);
  }
  const cleanup = iter.States[cleanupState];
  assert.equal(stepOfState(iter.States, cleanupState), STEP.cleanup);
  assert.equal(cleanup.End, true);
  assert.ok(cleanup.Retry?.length, 'cleanup is retried (it is idempotent)');
  // A cleanup the Lambda or the task timeout cut short is tried again: what it started goes on.
  for (const e of ['States.Timeout', 'Sandbox.Timedout', 'Lambda.Unknown']) assert.ok(cleanup.Retry[0].ErrorEquals.includes(e), `cleanup retries ${e}`);
  assert.ok(cleanup.Catch?.length, 'a cleanup that keeps failing still ends the VM with a report');
});

test('asl: every Task retries the retryable errors (and Lambda service errors) with backoff, a ceiling and full jitter', () => {
  const all = [...Object.entries(def.States), ...Object.entries(iter.States)].filter(([, s]: any) => s.Type === 'Task');
  for (const [name, s] of all as Array<[string, any]>) {
    const r = s.Retry?.[0];
    assert.ok(r, `${name} has a Retry`);
    for (const e of [...RETRYABLE_ERROR_NAMES, 'Lambda.ServiceException', 'Lambda.TooManyRequestsException']) assert.ok(r.ErrorEquals.includes(e), `${name} retries ${e}`);
    assert.ok(!r.ErrorEquals.includes('States.ALL'), `${name} must not retry everything`);
    assert.ok(r.BackoffRate > 1 && r.MaxDelaySeconds > 0 && r.JitterStrategy === 'FULL', `${name}: backoff, ceiling, jitter`);
    assert.ok(s.TimeoutSeconds > 0, `${name} has a timeout`);
  }
});
