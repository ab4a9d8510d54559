// The Lambda entry points: every step has one, each parses its event with the
// step's schema, calls the step with the deps it is given, returns JSON, and
// lets errors out under their names (what the state machine's Catch matches).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { awsHandler } from '../../functions/aws-deps.js';
import { resolvePolicyName } from '../../functions/plan-backup/aws.js';
import { PlanBackupInput, PlanBackupOutput } from '../../functions/plan-backup/schema.js';
import { runPlanBackup } from '../../functions/plan-backup/step.js';
import { SnapshotInput, SnapshotOutput } from '../../functions/snapshot/schema.js';
import { runSnapshot } from '../../functions/snapshot/step.js';
import { fixedClock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import { createFakeCloud, fakeVm } from '../statemachine/fake-cloud.js';
import { awsPolicy, runContext } from './fixtures.js';

const FUNCTIONS = fileURLToPath(new URL('../../functions/', import.meta.url));
const ctx = { awsRequestId: 'req-1', getRemainingTimeInMillis: () => 60_000 } as any;

function deps() {
  const { cloud, restorePoints } = createFakeCloud([{ ...fakeVm('i-1'), tags: { backup: 'web' } }], { pendingPolls: 0 });
  return { cloud, restorePoints, clock: fixedClock('2024-05-01T02:00:00Z'), logger: silentLogger };
}

test('every step folder has a Lambda entry point exporting `handler`, importable without any AWS environment', async () => {
  const steps = readdirSync(FUNCTIONS, { withFileTypes: true }).filter((d) => d.isDirectory() && existsSync(join(FUNCTIONS, d.name, 'step.ts')));
  assert.equal(steps.length, 13);
  for (const d of steps) {
    const mod = await import(join(FUNCTIONS, d.name, 'aws.ts'));
    assert.equal(typeof mod.handler, 'function', `${d.name}/aws.ts exports handler`);
  }
});

test('handler: parses, calls the step, returns plain JSON', async () => {
  const d = deps();
  const handler = awsHandler('snapshot', SnapshotInput, SnapshotOutput, runSnapshot, { deps: () => d });
  const out = await handler({ run: runContext(), vm: { ...fakeVm('i-1'), tags: {} } }, ctx);
  assert.equal(out.setId, 'ss-r1-i-1');
  assert.equal(typeof out.deadline, 'string');
});

test('handler: an event that does not match the schema is a ValidationError naming the field; step errors keep their names', async () => {
  const d = deps();
  const handler = awsHandler('snapshot', SnapshotInput, SnapshotOutput, runSnapshot, { deps: () => d });
  await assert.rejects(handler({ run: runContext() }, ctx), (e: Error) => e.name === 'ValidationError' && /snapshot: .*vm/.test(e.message));
  d.cloud.snapshots.createSnapshotSet = async () => {
    throw Object.assign(new Error('throttled'), { name: 'TransientError' });
  };
  await assert.rejects(handler({ run: runContext(), vm: { ...fakeVm('i-1'), tags: {} } }, ctx), { name: 'TransientError' });
});

test('planBackup: a schedule\'s { policyName } is resolved to the deployed policy; a policy given in full is refused', async () => {
  const source = { load: async (name: string) => ({ applianceId: 'acme', policy: { ...awsPolicy, name } }) };
  assert.deepEqual(await resolvePolicyName({ policyName: 'web', runId: 'r7' }, source), { runId: 'r7', applianceId: 'acme', policy: { ...awsPolicy, name: 'web' } });
  // Whoever may start an execution must not choose where workers run or what they reach.
  const full = { applianceId: 'x', policy: { ...awsPolicy, worker: { ...awsPolicy.worker, privateNetwork: false } } };
  await assert.rejects(resolvePolicyName(full, source), (e: Error) => e.name === 'ValidationError' && /only deployed policies/.test(e.message));
  await assert.rejects(resolvePolicyName({ policyName: 'web', policy: awsPolicy }, source), { name: 'ValidationError' });
  await assert.rejects(resolvePolicyName({}, source), (e: Error) => e.name === 'ValidationError' && /policyName/.test(e.message));
  const d = deps();
  const handler = awsHandler('planBackup', PlanBackupInput, PlanBackupOutput, runPlanBackup, { deps: () => d, prepare: (e) => resolvePolicyName(e, source) });
  const out = await handler({ policyName: 'web', runId: 'r7' }, ctx);
  assert.equal(out.run.runId, 'r7');
  assert.equal(out.run.applianceId, 'acme');
  assert.deepEqual(out.vms.map((v: any) => v.vmId), ['i-1']);
});
