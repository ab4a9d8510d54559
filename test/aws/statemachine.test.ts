// statemachines/backup.asl.json run by the local runner (aws-local-stepfunctions)
// with the AWS adapters over mocked AWS clients, and the real AWS worker agent
// answering on the queues: the happy path, then a failure at each step — each
// must end in cleanup that leaves no worker running, nothing staged, no queue,
// no snapshot grant, and records the step that failed.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { executeBackup } from '../../shared/local/runner.js';
import { PER_VM_STAGES, STEP, type StepName } from '../../shared/core/pipeline.js';
import { WorkerFailedError } from '../../shared/core/errors.js';
import { fixedClock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import { createAwsCloud } from '../../shared/aws/aws-cloud.js';
import { sameClients } from '../../shared/aws/clients.js';
import { clearAmiCache } from '../../shared/aws/worker-ami.js';
import { receiveJob, runAwsJob } from '../../shared/aws/worker-agent.js';
import type { PruneSettings, RestorePointInfo, RestorePoints } from '../../shared/ports/restore-points.js';
import { createFakeAws, testPresign, uploadBundle, type FakeAws } from './fake-aws.js';
import { awsPolicy, settings } from './fixtures.js';

let fake: FakeAws;
afterEach(() => {
  fake?.restore();
  clearAmiCache();
});

function setup(opts: { fake?: Parameters<typeof createFakeAws>[0]; agent?: 'runs' | 'silent' } = {}) {
  fake = createFakeAws({ snapshotPolls: 1, bootPolls: 1, ...opts.fake });
  uploadBundle(fake);
  fake.addVm('i-0aaaaaaaaaaaaaaa1', { Name: 'web-1', backup: 'web' }, [{ device: '/dev/xvda', sizeGiB: 8 }]);
  fake.addVm('i-0bbbbbbbbbbbbbbb2', { Name: 'web-2', backup: 'web' }, [{ device: '/dev/xvda', sizeGiB: 8 }, { device: '/dev/xvdf', sizeGiB: 2000 }]);
  const clock = fixedClock('2024-05-01T02:00:00Z');
  const points: RestorePointInfo[] = [];
  const forgotten: string[] = [];
  const prunes: PruneSettings[] = [];
  const restorePoints: RestorePoints = {
    list: async (_r, f = {}) => points.filter((p) => (!f.policy || p.policy === f.policy) && (!f.vmId || p.vmId === f.vmId)),
    forget: async (_r, ids) => void forgotten.push(...ids),
    prune: async (_r, settings) => {
      prunes.push(settings);
      return { status: 'pruned', packsDeleted: 2, bytesFreed: 64 << 20, packsMarked: 1, packsRepacked: 0, bytesRepacked: 0, packsLeftForLater: 0, packsNotRepacked: 0 };
    },
  };
  const cloud = createAwsCloud({ settings, clients: sameClients(fake.clients), s3: fake.clients.s3, clock, logger: silentLogger, presign: testPresign, pollMs: 1000, restorePoints });
  // The worker: the real agent takes the job from its queue and reports on the status queue.
  if (opts.agent !== 'silent') {
    fake.world.onJob = (queue) =>
      setImmediate(async () => {
        const status = fake.world.queues.get(queue.name.replace(/-job$/, '-status'))!;
        const msg = await receiveJob(fake.clients.sqs, queue.url, { idleMs: 1 });
        if (!msg) return;
        await runAwsJob(msg, {
          sqs: fake.clients.sqs,
          statusQueueUrl: status.url,
          openSource: async (snapshotId, sizeBytes) => ({ size: sizeBytes, blockSize: 524288, snapshotId, close: async () => {} }) as any,
          openStore: async () => ({}) as any,
          secret: async () => 'pw',
          progressMs: 0,
          backup: async (_s, _p, req) => {
            const id = `rp-${req.runId}-${req.vm.vmId}`;
            points.push({ id, vmId: req.vm.vmId, vmName: req.vm.name, policy: req.policy, runId: req.runId, time: new Date(Date.UTC(2024, 4, points.length + 1)).toISOString(), disks: [], tags: {} });
            return { restorePointId: id, seconds: 1, disks: req.disks.map((d) => ({ diskId: d.diskId, sizeBytes: d.source.size, blocksRead: 1, bytesRead: 524288, blocksNew: 1, bytesStored: 1000, incremental: !!d.parentSnapshotRef })) };
          },
        });
      });
  }
  const deps = { cloud, restorePoints, clock, logger: silentLogger };
  return { deps, clock, points, forgotten, prunes };
}

const run = (deps: ReturnType<typeof setup>['deps'], runId: string, inject?: Parameters<typeof executeBackup>[0]['inject']) =>
  executeBackup({ deps, input: { runId, applianceId: 'acme', policy: awsPolicy }, waitMs: 1, retryMs: 1, inject });

/** What a user would look for after a run: nothing of it left running, staged, queued or granted. */
function leftovers() {
  return {
    workers: [...fake.world.instances.values()].filter((i) => i.tags['tender:role'] === 'worker' && i.state !== 'terminated').map((i) => i.id),
    staged: [...fake.world.objects.keys()].filter((k) => k.startsWith('staging/')),
    queues: [...fake.world.queues.keys()],
    grants: [...fake.world.snapshots.values()].filter((s) => s.tags['tender:reader']).map((s) => s.id),
  };
}

test('aws run: every VM backed up through the real adapters; nothing left running, staged, queued or granted; the next run is incremental', async () => {
  // Prepare
  const { deps, prunes } = setup();
  // Act
  const s = await run(deps, 'r1');
  // Assess
  assert.equal(s.ok, true, JSON.stringify(s.vms));
  assert.deepEqual(s.vms.map((v) => [v.vmId, v.outcome, v.restorePointId]), [
    ['i-0aaaaaaaaaaaaaaa1', 'succeeded', 'rp-r1-i-0aaaaaaaaaaaaaaa1'],
    ['i-0bbbbbbbbbbbbbbb2', 'succeeded', 'rp-r1-i-0bbbbbbbbbbbbbbb2'],
  ]);
  assert.deepEqual(leftovers(), { workers: [], staged: [], queues: [], grants: [] });
  // Sized by total disk: 8 GiB → small, 2008 GiB → medium.
  const types = [...fake.world.instances.values()].filter((i) => i.tags['tender:role'] === 'worker').map((i) => [i.tags['tender:vm'], i.type]);
  assert.deepEqual(Object.fromEntries(types), { 'i-0aaaaaaaaaaaaaaa1': 'c5.large', 'i-0bbbbbbbbbbbbbbb2': 'c5.2xlarge' });
  const worker = [...fake.world.instances.values()].find((i) => i.tags['tender:role'] === 'worker')!;
  assert.equal(worker.tags.Name, 'tender-web');
  assert.equal(worker.tags.CostCenter, 'acme');
  // The catalog has both; the second run diffs against the first set.
  const s2 = await run(deps, 'r2');
  assert.ok(s2.vms.every((v) => v.outcome === 'succeeded' && v.incremental === true), JSON.stringify(s2.vms));
  assert.ok(!('error' in s2.retention) && s2.retention.snapshotSetsDeleted.length === 2, 'r1 sets no longer needed as parents');
  assert.deepEqual(leftovers(), { workers: [], staged: [], queues: [], grants: [] });
  // Each run pruned the repository after retention, with the policy's settings, and reported it.
  assert.deepEqual(prunes.map((p) => [p.owner, p.repackBelow, p.maxRepackBytes]), [
    ['run r1 (policy web)', 0.5, 2048 * 1024 * 1024],
    ['run r2 (policy web)', 0.5, 2048 * 1024 * 1024],
  ]);
  assert.ok(!('error' in s2.retention) && s2.retention.maintenance?.status === 'pruned' && s2.retention.maintenance.bytesFreed === 64 << 20, JSON.stringify(s2.retention));
});

const steps: StepName[] = PER_VM_STAGES.flatMap((st) => (st.poll ? [st.step, st.poll.step] : [st.step])).filter((x) => x !== STEP.recordOutcome);

for (const step of steps) {
  test(`aws run: a failure at ${step} ends in cleanup — worker terminated, staged objects removed, queues and grants gone, failure recorded`, async () => {
    // Prepare
    const { deps } = setup();
    // Act
    const s = await run(deps, 'r1', [{ step, vmId: 'i-0aaaaaaaaaaaaaaa1', error: () => new WorkerFailedError(`injected at ${step}`) }]);
    // Assess
    const a = s.vms.find((v) => v.vmId === 'i-0aaaaaaaaaaaaaaa1')!;
    assert.equal(a.outcome, 'failed');
    assert.equal(a.step, step);
    assert.deepEqual(a.cleanup?.problems, []);
    assert.equal(s.vms.find((v) => v.vmId === 'i-0bbbbbbbbbbbbbbb2')!.outcome, 'succeeded', 'the other VM carries on');
    assert.deepEqual(leftovers(), { workers: [], staged: [], queues: [], grants: [] });
    const madeRestorePoint = step === STEP.revokeAccess || step === STEP.deallocateWorker;
    const setsLeft = [...fake.world.snapshots.values()].filter((x) => x.tags['tender:vm'] === 'i-0aaaaaaaaaaaaaaa1');
    assert.equal(setsLeft.length > 0, madeRestorePoint, madeRestorePoint ? 'set kept as the next parent' : 'set deleted');
    const record = JSON.parse(fake.world.objects.get('catalog/vms/i-0aaaaaaaaaaaaaaa1/r1.json')!);
    assert.equal(record.outcome, 'failed');
    assert.equal(record.step, step);
  });
}

test('aws run: a worker that refuses its bundle (digest mismatch) fails at installWorker and is cleaned up', async () => {
  const { deps } = setup({ fake: { bundleSha256: () => 'ee'.repeat(32) } });
  const s = await run(deps, 'r1');
  assert.ok(s.vms.every((v) => v.outcome === 'failed' && v.step === 'installWorker' && v.error?.name === 'BundleIntegrityError'), JSON.stringify(s.vms));
  assert.deepEqual(leftovers(), { workers: [], staged: [], queues: [], grants: [] });
  assert.equal([...fake.world.snapshots.values()].length, 0, 'snapshot sets deleted');
});

test('aws run: a worker that dies after taking its job is detected by the heartbeat timeout, not waited on forever', async () => {
  const { deps, clock } = setup({ agent: 'silent' });
  // Each CheckBackup poll is a 30 s wait in the cloud: let the clock move so the heartbeat can run out.
  const getJobStatus = deps.cloud.channel.getJobStatus.bind(deps.cloud.channel);
  deps.cloud.channel.getJobStatus = async (ref, jobId) => {
    clock.advance(60_000);
    return getJobStatus(ref, jobId);
  };
  const s = await run(deps, 'r1');
  assert.ok(s.vms.every((v) => v.outcome === 'failed' && v.step === 'checkBackup'));
  assert.match(s.vms[0]!.error!.message, /has not reported for/);
  assert.deepEqual(leftovers(), { workers: [], staged: [], queues: [], grants: [] });
});

test('aws run: a snapshot that goes into `error` fails the VM with SnapshotFailedError and no worker is ever started', async () => {
  const { deps } = setup({ fake: { snapshotPolls: 3 } });
  const orig = deps.cloud.snapshots.getSnapshotSet.bind(deps.cloud.snapshots);
  deps.cloud.snapshots.getSnapshotSet = async (id) => {
    for (const x of fake.world.snapshots.values()) if (x.tags['tender:set'] === id && x.tags['tender:vm'] === 'i-0aaaaaaaaaaaaaaa1') Object.assign(x, { state: 'error', stateMessage: 'volume unavailable' });
    return orig(id);
  };
  const s = await run(deps, 'r1');
  const a = s.vms.find((v) => v.vmId === 'i-0aaaaaaaaaaaaaaa1')!;
  assert.equal(a.error?.name, 'SnapshotFailedError');
  assert.match(a.error!.message, /volume unavailable/);
  assert.equal([...fake.world.instances.values()].filter((i) => i.tags['tender:vm'] === 'i-0aaaaaaaaaaaaaaa1' && i.tags['tender:role'] === 'worker').length, 0);
  assert.deepEqual(leftovers(), { workers: [], staged: [], queues: [], grants: [] });
});
