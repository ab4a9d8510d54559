// The worker ↔ pipeline channel and revocation against mocked SQS / EC2 / S3,
// with the real worker agent (shared/aws/worker-agent.ts) on the other end of
// the queues and an in-memory data mover.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { SendMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { DeleteObjectsCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { createAwsCloud } from '../../shared/aws/aws-cloud.js';
import { sameClients } from '../../shared/aws/clients.js';
import { clearAmiCache } from '../../shared/aws/worker-ami.js';
import { receiveJob, runAwsJob } from '../../shared/aws/worker-agent.js';
import type { JobMessage, StatusMessage } from '../../shared/aws/sqs-channel.js';
import { fixedClock } from '../../shared/core/clock.js';
import type { BackupResult, WorkerJob } from '../../shared/ports/cloud.js';
import { BUCKET, awsError, createFakeAws, testPresign, uploadBundle, type FakeAws } from './fake-aws.js';
import { settings } from './fixtures.js';

let fake: FakeAws;
afterEach(() => {
  fake?.restore();
  clearAmiCache();
});

const result: BackupResult = { restorePointId: 'rp-1', seconds: 3, disks: [{ diskId: 'vol-1', sizeBytes: 8 << 30, blocksRead: 10, bytesRead: 10 << 19, blocksNew: 10, bytesStored: 1 << 20, incremental: false }] };

async function setup(over: Partial<typeof settings> = {}) {
  fake = createFakeAws({ snapshotPolls: 0, bootPolls: 0 });
  uploadBundle(fake);
  fake.addVm('i-0aaaaaaaaaaaaaaa1', { Name: 'web-1', backup: 'web' }, [{ device: '/dev/xvda', sizeGiB: 8 }]);
  const clock = fixedClock('2024-05-01T02:00:00Z');
  const cloud = createAwsCloud({ settings: { ...settings, ...over }, clients: sameClients(fake.clients), snapshotClients: sameClients(fake.clients), s3: fake.clients.s3, clock, presign: testPresign, pollMs: 1000, restorePoints: { list: async () => [], forget: async () => {}, prune: async () => ({ status: 'skipped', reason: 'not used here' }) } });
  const [vm] = await cloud.snapshots.findVms({ ids: ['i-0aaaaaaaaaaaaaaa1'] });
  const parent = await cloud.snapshots.createSnapshotSet({ runId: 'r0', vm: vm!, tags: { 'tender:appliance': 'acme' } });
  const set = await cloud.snapshots.createSnapshotSet({ runId: 'r1', vm: vm!, tags: { 'tender:appliance': 'acme' } });
  const worker = await cloud.workers.deployWorker({ runId: 'r1', vm: vm!, profile: { name: 'small', instanceType: 'c5.large' }, placement: { subnet: 'subnet-0abc', securityGroups: [] }, privateNetwork: true, tags: {} });
  while ((await cloud.workers.getWorkerState(worker)) !== 'ready');
  await cloud.workers.installWorker({ runId: 'r1', vmId: vm!.vmId, worker });
  const job: WorkerJob = {
    jobId: 'job-r1-i-0aaaaaaaaaaaaaaa1',
    runId: 'r1',
    policy: 'web',
    vm: { vmId: vm!.vmId, name: vm!.name, tags: vm!.tags },
    snapshotSetId: set.setId,
    parentSnapshotSetId: parent.setId,
    disks: set.disks.map((d, i) => ({ ...d, parentSnapshotId: parent.disks[i]!.snapshotId })),
    repository: { url: 's3://acme-backups/tender', key: { passphraseEnv: 'P' } },
    tags: { policy: 'web' },
  };
  return { cloud, clock, vm: vm!, set, parent, worker, job };
}

/** The worker side: the real agent, over the same (mocked) SQS, with an in-memory data mover. */
async function agent(backup: () => Promise<BackupResult>) {
  const jobQueue = [...fake.world.queues.values()].find((q) => q.name.endsWith('-job'))!;
  const statusQueue = [...fake.world.queues.values()].find((q) => q.name.endsWith('-status'))!;
  const msg = await receiveJob(fake.clients.sqs, jobQueue.url, { idleMs: 1, now: (() => { let t = 0; return () => (t += 0); })() });
  assert.ok(msg, 'a job arrived');
  return runAwsJob(msg!, {
    sqs: fake.clients.sqs,
    statusQueueUrl: statusQueue.url,
    openSource: async (snapshotId, sizeBytes) => ({ size: sizeBytes, blockSize: 512 * 1024, allocatedBlocks: async () => [], changedBlocks: async () => ({ blocks: [], incremental: true }), readBlock: async () => new Uint8Array(0), close: async () => {}, snapshotId }) as any,
    openStore: async () => ({}) as any,
    secret: async () => 'secret',
    backup: async (_store, _pass, req) => {
      req.onProgress?.({ bytesDone: 1 << 20, bytesTotal: 8 << 30, bytesPerSecond: 1 << 20 });
      return backup();
    },
    progressMs: 0,
  });
}

test('startJob: grants only this worker read access to the job\'s snapshots (and the parent\'s), queues the job, records it; a second call queues nothing', async () => {
  // Prepare
  const { cloud, worker, job, set, parent } = await setup();
  // Act
  await cloud.channel.startJob(worker, job);
  await cloud.channel.startJob(worker, job);
  // Assess
  const jobQueue = [...fake.world.queues.values()].find((q) => q.name.endsWith('-job'))!;
  assert.equal(jobQueue.messages.length, 1);
  const msg = JSON.parse(jobQueue.messages[0]!.body) as JobMessage;
  assert.equal(msg.job.jobId, job.jobId);
  assert.equal(msg.aws.region, 'eu-west-1');
  const arn = `arn:aws:ec2:eu-west-1:111122223333:instance/${worker.workerId}`;
  for (const d of [...set.disks, ...parent.disks]) assert.equal(fake.world.snapshots.get(d.snapshotId)!.tags['tender:reader'], arn);
  assert.ok(fake.world.objects.has(`jobs/${job.jobId}.json`));
});

test('getJobStatus: running with the agent\'s progress, then succeeded with its result', async () => {
  const { cloud, worker, job } = await setup();
  await cloud.channel.startJob(worker, job);
  assert.equal((await cloud.channel.getJobStatus(worker, job.jobId)).state, 'queued');
  let finish!: (r: BackupResult) => void;
  const done = agent(() => new Promise((r) => (finish = r)));
  await new Promise((r) => setTimeout(r, 20));
  const running = await cloud.channel.getJobStatus(worker, job.jobId);
  assert.equal(running.state, 'running');
  assert.equal(running.state === 'running' && running.progress?.bytesDone, 1 << 20);
  finish(result);
  await done;
  const final = await cloud.channel.getJobStatus(worker, job.jobId);
  assert.deepEqual(final.state === 'succeeded' && final.result, result);
  // Read once more: the recorded result, not a drained queue.
  assert.equal((await cloud.channel.getJobStatus(worker, job.jobId)).state, 'succeeded');
});

test('getJobStatus: the newest report wins whatever order SQS delivers in; a failed job carries the worker\'s error', async () => {
  const { cloud, worker, job } = await setup();
  await cloud.channel.startJob(worker, job);
  const status = [...fake.world.queues.values()].find((q) => q.name.endsWith('-status'))!;
  const put = (m: StatusMessage) => status.messages.push({ id: String(m.seq), body: JSON.stringify(m), sent: Date.parse('2024-05-01T02:00:00Z'), hiddenUntil: 0 });
  put({ type: 'status', jobId: job.jobId, seq: 5, status: { state: 'running', progress: { bytesDone: 500, bytesTotal: 1000, bytesPerSecond: 1 }, updatedAt: '' } });
  put({ type: 'status', jobId: job.jobId, seq: 2, status: { state: 'running', progress: { bytesDone: 200, bytesTotal: 1000, bytesPerSecond: 1 }, updatedAt: '' } });
  const s = await cloud.channel.getJobStatus(worker, job.jobId);
  assert.equal(s.state === 'running' && s.progress?.bytesDone, 500);
  assert.equal(status.messages.length, 0, 'drained');
  await agent(() => Promise.reject(Object.assign(new Error('access denied to bucket "acme-backups"'), { name: 'AccessDeniedError' })));
  const f = await cloud.channel.getJobStatus(worker, job.jobId);
  assert.deepEqual(f.state === 'failed' && f.error, { name: 'AccessDeniedError', message: 'access denied to bucket "acme-backups"' });
});

test('getJobStatus: a worker silent past the heartbeat timeout, or whose instance is gone, has failed with WorkerFailedError', async () => {
  const { cloud, worker, job, clock } = await setup();
  await cloud.channel.startJob(worker, job);
  clock.advance(299_000);
  assert.equal((await cloud.channel.getJobStatus(worker, job.jobId)).state, 'queued');
  clock.advance(2_000);
  const s = await cloud.channel.getJobStatus(worker, job.jobId);
  assert.equal(s.state, 'failed');
  assert.equal(s.state === 'failed' && s.error.name, 'WorkerFailedError');
  assert.match(s.state === 'failed' ? s.error.message : '', /has not reported for 301s/);
  fake.world.instances.get(worker.workerId)!.state = 'terminated';
  const g = await cloud.channel.getJobStatus(worker, job.jobId);
  assert.match(g.state === 'failed' ? g.error.message : '', /terminated/);
});

test('revokeAccess: staged objects deleted, queues deleted, snapshot grants removed — the worker can no longer fetch its bundle, read a snapshot or reach the pipeline', async () => {
  // Prepare
  const { cloud, worker, job, set, parent, vm } = await setup();
  await cloud.channel.startJob(worker, job);
  fake.fail(DeleteObjectsCommand, awsError('SlowDown', 'Please reduce your request rate.', 503));
  // Act
  const { revoked } = await cloud.access.revokeAccess({ runId: 'r1', vmId: vm.vmId });
  // Assess
  assert.ok(revoked.some((r) => r.includes('staging/r1/')));
  assert.equal(revoked.filter((r) => r.startsWith('job channel')).length, 2);
  assert.ok(revoked.some((r) => r.startsWith('EBS direct read')));
  assert.equal([...fake.world.objects.keys()].filter((k) => k.startsWith('staging/')).length, 0);
  assert.equal(fake.world.queues.size, 0);
  for (const d of [...set.disks, ...parent.disks]) assert.equal(fake.world.snapshots.get(d.snapshotId)!.tags['tender:reader'], undefined);
  // The worker's view.
  await assert.rejects(fake.clients.sqs.send(new ReceiveMessageCommand({ QueueUrl: JSON.parse(fake.world.objects.get(`jobs/${job.jobId}.json`)!).queues.jobUrl })), /does not exist/);
  const s = await cloud.channel.getJobStatus(worker, job.jobId);
  assert.match(s.state === 'failed' ? s.error.message : '', /revoked/);
  // Idempotent.
  assert.deepEqual((await cloud.access.revokeAccess({ runId: 'r1', vmId: vm.vmId })).revoked, []);
});

test('revokeAccess: staged objects that will not delete do not keep the snapshot grants or the queues alive; the retry finishes the job', async () => {
  // Prepare: S3 refuses every delete for longer than the revoke's own attempts.
  const { cloud, worker, job, set, parent, vm } = await setup();
  await cloud.channel.startJob(worker, job);
  fake.fail(DeleteObjectsCommand, awsError('SlowDown', 'Please reduce your request rate.', 503), 4);
  // Act
  await assert.rejects(cloud.access.revokeAccess({ runId: 'r1', vmId: vm.vmId }), (e: Error) => e.name === 'TransientError' || /reduce your request rate/.test(e.message));
  // Assess: the worker can no longer read a snapshot or reach the pipeline,
  for (const d of [...set.disks, ...parent.disks]) assert.equal(fake.world.snapshots.get(d.snapshotId)!.tags['tender:reader'], undefined);
  assert.equal(fake.world.queues.size, 0);
  assert.ok([...fake.world.objects.keys()].some((k) => k.startsWith('staging/')), 'the staged objects are still there');
  // and the state machine's retry deletes what is left.
  const { revoked } = await cloud.access.revokeAccess({ runId: 'r1', vmId: vm.vmId });
  assert.ok(revoked.some((r) => r.includes('staging/r1/')));
  assert.equal([...fake.world.objects.keys()].filter((k) => k.startsWith('staging/')).length, 0);
});

test('revokeAccess: when the record of grants cannot be read, what is found without it is revoked, and the retry does the rest', async () => {
  const { cloud, worker, job, set, parent, vm } = await setup();
  await cloud.channel.startJob(worker, job);
  fake.fail(GetObjectCommand, awsError('InternalError', 'We encountered an internal error.', 500), 1);
  await assert.rejects(cloud.access.revokeAccess({ runId: 'r1', vmId: vm.vmId }), (e: Error) => e.name === 'TransientError' && /grants.json/.test(e.message));
  // The run's own snapshots (found by their tags), the staged objects and the queues (by name).
  for (const d of set.disks) assert.equal(fake.world.snapshots.get(d.snapshotId)!.tags['tender:reader'], undefined, `${d.snapshotId} untagged`);
  assert.equal(fake.world.queues.size, 0);
  assert.equal([...fake.world.objects.keys()].filter((k) => k.startsWith('staging/')).length, 0);
  // The parent set's grants are known from the record only: the retry, reading it, removes them.
  await cloud.access.revokeAccess({ runId: 'r1', vmId: vm.vmId });
  for (const d of parent.disks) assert.equal(fake.world.snapshots.get(d.snapshotId)!.tags['tender:reader'], undefined, `${d.snapshotId} untagged`);
});

test('startJob, cross-account: the job names the read-only production role for the worker when there is one, never the snapshot role', async () => {
  const snapshotRole = { roleArn: 'arn:aws:iam::222233334444:role/TenderSnapshots', externalId: 'ext-1' };
  const workerSnapshotRole = { roleArn: 'arn:aws:iam::222233334444:role/TenderWorkerReads', externalId: 'ext-1' };
  for (const [over, expected] of [
    [{ snapshotRole, workerSnapshotRole }, workerSnapshotRole],
    [{ snapshotRole }, snapshotRole],
  ] as const) {
    const { cloud, worker, job } = await setup(over);
    await cloud.channel.startJob(worker, job);
    const jobQueue = [...fake.world.queues.values()].find((q) => q.name.endsWith('-job'))!;
    assert.deepEqual((JSON.parse(jobQueue.messages[0]!.body) as JobMessage).aws.snapshotRole, expected);
    fake.restore();
  }
});

test('the agent: takes one job, reports running then the result; a revoked queue ends it without a job', async () => {
  const { cloud, worker, job, vm } = await setup();
  await cloud.channel.startJob(worker, job);
  const r = await agent(async () => result);
  assert.deepEqual(r, result);
  const sent = fake.mocks.sqs.commandCalls(SendMessageCommand).map((c) => JSON.parse((c.args[0].input as any).MessageBody)).filter((m) => m.type === 'status');
  assert.equal(sent[0].status.state, 'running');
  assert.equal(sent.at(-1).status.state, 'succeeded');
  assert.ok(sent.every((m, i) => m.seq === i), 'seq increases');
  await cloud.access.revokeAccess({ runId: 'r1', vmId: vm.vmId });
  assert.equal(await receiveJob(fake.clients.sqs, `https://sqs.eu-west-1.amazonaws.com/111122223333/gone-job`, { idleMs: 60_000 }), undefined);
  assert.equal(BUCKET.length > 0, true);
});
