// The Functions app's registrations and triggers: a timer per enabled Azure
// policy on its schedule (NCRONTAB), an HTTP trigger that starts a policy now,
// the orchestrations and one activity per step; handlers called the way the
// host calls them, against a fake durable client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../shared/core/config.js';
import { STEP } from '../../shared/core/pipeline.js';
import { ORCHESTRATOR, VM_ORCHESTRATOR } from '../../azure/orchestrator.js';
import { ncrontabOf, registerTenderApp, scheduledRunId, type FunctionsApi } from '../../azure/app.js';
import { PlanBackupInput } from '../../functions/plan-backup/schema.js';

const repo = { url: 'azblob://tenderrepo/backups/tender', key: { keyVaultKeyId: 'https://kv.vault.azure.net/keys/k', passphraseSecretId: 'https://kv.vault.azure.net/secrets/p' } };
const config = parseConfig({
  applianceId: 'prod',
  policies: [
    { name: 'gold', provider: 'azure', schedule: '30 1 * * *', vms: { tags: { backup: 'gold' } }, repository: repo },
    { name: 'paused', provider: 'azure', enabled: false, vms: { tags: { backup: 'x' } }, repository: repo },
    { name: 'ec2', provider: 'aws', vms: { ids: ['i-1'] }, repository: { url: 's3://b/p', key: { passphraseEnv: 'P' } } },
  ],
});

function fakeApi() {
  const reg = { timers: new Map<string, any>(), http: new Map<string, any>(), orchestrations: new Map<string, any>(), activities: new Map<string, any>() };
  const instances = new Map<string, { name: string; input: any }>();
  const client = {
    async startNew(name: string, o: { instanceId?: string; input?: unknown } = {}) {
      instances.set(o.instanceId!, { name, input: o.input });
      return o.instanceId!;
    },
    async getStatus(instanceId: string) {
      return instances.has(instanceId) ? { runtimeStatus: 'Running' } : undefined;
    },
    createCheckStatusResponse(_req: unknown, instanceId: string) {
      return { status: 202, jsonBody: { id: instanceId, statusQueryGetUri: `https://app/runtime/webhooks/durabletask/instances/${instanceId}` } };
    },
  };
  const api: FunctionsApi = {
    app: { timer: (n, o) => void reg.timers.set(n, o), http: (n, o) => void reg.http.set(n, o) },
    df: {
      app: { orchestration: (n, h) => void reg.orchestrations.set(n, h), activity: (n, o) => void reg.activities.set(n, o) },
      input: { durableClient: () => ({ type: 'durableClient' }) },
      getClient: () => client,
    },
  };
  return { api, reg, instances };
}

const ctx = { info() {}, warn() {}, error() {}, debug() {} } as any;
const request = (policy: string, body = '') => ({ params: { policy }, text: async () => body }) as any;
const noDeps = async () => {
  throw new Error('not called');
};

test('app: one timer per enabled Azure policy on its schedule, the HTTP start, both orchestrations and an activity per step', () => {
  // Prepare
  const { api, reg } = fakeApi();
  // Act
  const out = registerTenderApp({ api, config, depsFor: noDeps });
  // Assess
  assert.deepEqual([...reg.timers.keys()], ['tender-schedule-gold']);
  assert.equal(reg.timers.get('tender-schedule-gold').schedule, '0 30 1 * * *');
  assert.deepEqual(reg.timers.get('tender-schedule-gold').extraInputs, [{ type: 'durableClient' }]);
  assert.deepEqual([...reg.orchestrations.keys()], [ORCHESTRATOR, VM_ORCHESTRATOR]);
  assert.deepEqual([...reg.activities.keys()].sort(), Object.values(STEP).sort());
  const http = reg.http.get(out.http);
  assert.equal(http.route, 'backup/{policy}');
  assert.deepEqual(http.methods, ['POST']);
  assert.equal(http.authLevel, 'function');
});

test('app: a timer starts the policy\'s run once per scheduled minute, with a run id the plan accepts', async () => {
  // Prepare
  const { api, reg, instances } = fakeApi();
  registerTenderApp({ api, config, depsFor: noDeps, now: () => new Date('2024-03-01T01:30:04Z') });
  const fire = reg.timers.get('tender-schedule-gold').handler;
  // Act
  await fire({ isPastDue: false }, ctx);
  await fire({ isPastDue: false }, ctx);
  // Assess
  assert.equal(instances.size, 1, 'a timer firing twice starts one run');
  const [instanceId, started] = [...instances.entries()][0]!;
  assert.equal(instanceId, 'tender-r20240301T0130Z-gold');
  assert.equal(started.name, ORCHESTRATOR);
  assert.equal(started.input.policy.name, 'gold');
  assert.equal(started.input.applianceId, 'prod');
  assert.doesNotThrow(() => PlanBackupInput.parse(started.input));
});

test('app: the HTTP trigger starts a policy now (202 with status URLs), names unknown policies (404), bad bodies (400) and taken run ids (409)', async () => {
  // Prepare
  const { api, reg, instances } = fakeApi();
  registerTenderApp({ api, config, depsFor: noDeps, now: () => new Date('2024-03-01T09:00:00Z') });
  const http = reg.http.get('tender-start').handler;
  // Act
  const ok = await http(request('gold'), ctx);
  const named = await http(request('gold', '{"runId":"r-manual-1"}'), ctx);
  const dup = await http(request('gold', '{"runId":"r-manual-1"}'), ctx);
  const unknown = await http(request('ec2'), ctx);
  const badJson = await http(request('gold', '{'), ctx);
  const badId = await http(request('gold', '{"runId":"has space"}'), ctx);
  // Assess
  assert.equal(ok.status, 202);
  assert.equal(ok.jsonBody.id, 'tender-r20240301T0900Z-m-gold');
  assert.equal(named.jsonBody.id, 'tender-r-manual-1');
  assert.equal(instances.get('tender-r-manual-1')!.input.runId, 'r-manual-1');
  assert.equal(dup.status, 409);
  assert.equal(unknown.status, 404);
  assert.match(unknown.jsonBody.error, /no Azure policy named "ec2" — this deployment has: gold, paused/);
  assert.equal(badJson.status, 400);
  assert.equal(badId.status, 400);
  assert.equal(instances.size, 2);
});

test('app: schedules and run ids', () => {
  assert.equal(ncrontabOf('0 2 * * 1-5'), '0 0 2 * * 1-5');
  const long = scheduledRunId('p'.repeat(63), new Date('2024-03-01T01:30:00Z'));
  assert.ok(long.runId.length <= 80);
  assert.doesNotThrow(() => PlanBackupInput.shape.runId.parse(long.runId));
});
