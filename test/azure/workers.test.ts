// Workers, the queue channel and revocation: mocked ARM for compute and
// network, Azurite (started here) for everything on the storage side — the
// bundle behind its stored-access-policy SAS, the job and report queues, the
// snapshot read through a page-blob SAS, the repository — with the Azure
// worker agent itself running the job. After revocation every SAS is refused.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { BlobServiceClient, BlockBlobClient, BlobSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from '@azure/storage-blob';
import { QueueClient, QueueServiceClient } from '@azure/storage-queue';
import { startAzurite, type Azurite } from '../support/azurite.js';
import type { Clock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import { AccessDeniedError, BundleIntegrityError, CapacityError, TransientError, WorkerFailedError } from '../../shared/core/errors.js';
import type { WorkerJob } from '../../shared/ports/cloud.js';
import { parseAzureSettings } from '../../shared/azure/settings.js';
import { createRegions } from '../../shared/azure/region.js';
import { keyBasedStorage } from '../../shared/azure/storage.js';
import { createMemoryStateStore } from '../../shared/azure/state-store.js';
import { createAzureWorkers } from '../../shared/azure/workers.js';
import { createAzureSnapshots } from '../../shared/azure/snapshots.js';
import { workerNames } from '../../shared/azure/names.js';
import { grantBlobReadSas } from '../../shared/azure/sas.js';
import { runAzureAgent } from '../../shared/azure/worker-agent.js';
import { openStoreFromUrl } from '../../worker/store-from-url.js';
import { openRepository } from '../../worker/repository.js';
import { listRestorePoints } from '../../worker/restore-points.js';
import type { AzureNetworkModel } from '../../shared/core/network/types.js';
import { NetworkPreflightError } from '../../shared/core/errors.js';
import { RG, SUB, addProtectedVm, addWorkerNetwork, createArmWorld, id, restError } from './arm-mock.js';

let az: Azurite;
let blobService: BlobServiceClient;
let queueService: QueueServiceClient;
let cred: StorageSharedKeyCredential;
before(async () => {
  az = await startAzurite();
  cred = new StorageSharedKeyCredential(az.account, az.accountKey);
  blobService = new BlobServiceClient(az.blobUrl, cred);
  queueService = new QueueServiceClient(az.queueUrl, cred);
});
after(async () => {
  await az?.stop();
});

const MiB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Real time (storage checks SAS times against it) that a test can move forward. */
function movableClock(): Clock & { advance(ms: number): void } {
  let offset = 0;
  return {
    now: () => new Date(Date.now() + offset),
    sleep: async (ms) => void (offset += ms),
    advance: (ms) => void (offset += ms),
  };
}

let seq = 0;

async function setup(opts: { bundleData?: Buffer; bundleSha?: string; privateNetwork?: boolean; preflight?: 'enforce' | 'warn' | 'off'; readNetwork?: (region: string) => Promise<AzureNetworkModel> } = {}) {
  const runId = `r-test-${++seq}`;
  const w = createArmWorld();
  const vmRaw = addProtectedVm(w, `web-${seq}`, { dataDisksGiB: [] });
  const { placement } = addWorkerNetwork(w, { account: { name: az.account, blobUrl: az.blobUrl, queueUrl: az.queueUrl, key: az.accountKey }, endpoints: ['blob', 'queue'] });
  const zone = `/subscriptions/${SUB}/resourceGroups/rg-dns/providers/Microsoft.Network/privateDnsZones/privatelink.blob.core.windows.net`;
  const settings = parseAzureSettings({ subscriptionId: SUB, resourceGroup: RG, applianceId: 'tender', sasProtocol: 'https,http', heartbeatTimeoutSeconds: 60, privateDnsZoneIds: { blob: zone } });
  const clock = movableClock();
  const state = createMemoryStateStore();
  const regions = createRegions({ arm: w.clients, settings, logger: silentLogger });
  const bundleData = opts.bundleData ?? randomBytes(64 * 1024);
  const bundle = async () => ({ fileName: 'tender-worker.tgz', sha256: opts.bundleSha ?? sha(bundleData), data: bundleData });
  const sent: { rc?: any } = {};
  // The install script, played in JS: download through the SAS, check the digest, report like the script's exit codes.
  w.runInstall = async (rc) => {
    sent.rc = rc;
    const p = (n: string) => [...rc.parameters, ...rc.protectedParameters].find((x: any) => x.name === n)?.value;
    const res = await fetch(p('BUNDLE_URL'));
    if (res.status === 403 || res.status === 404) return { exitCode: 43, output: '', error: `the bundle download was refused (HTTP ${res.status})`, executionState: 'Failed' };
    const got = sha(Buffer.from(await res.arrayBuffer()));
    if (got !== p('BUNDLE_SHA256')) return { exitCode: 42, output: '', error: `bundle sha256 is ${got}, expected ${p('BUNDLE_SHA256')}: not unpacked, not run`, executionState: 'Failed' };
    return { exitCode: 0, output: `tender-installed ${got}\n`, error: '', executionState: 'Succeeded' };
  };
  const workers = createAzureWorkers({ arm: w.clients, settings, regions, storageFor: keyBasedStorage({ storage: w.clients.storage, resourceGroup: RG }), state, bundle, clock, logger: silentLogger, revokeWaitSeconds: 5, preflight: opts.preflight, readNetwork: opts.readNetwork });
  const snapshots = createAzureSnapshots({ arm: w.clients, settings, regions, clock, logger: silentLogger });
  const [vm] = await snapshots.findVms({ ids: [vmRaw.id] });
  const deployReq = { runId, vm: vm!, profile: { name: 'small', instanceType: 'Standard_F2s_v2' }, placement, privateNetwork: opts.privateNetwork ?? true, tags: { 'tender:run': runId, owner: 'backup-team' } };
  return { w, runId, vm: vm!, clock, state, workers, snapshots, deployReq, sent, bundleData, names: workerNames(runId, vm!.vmId) };
}

async function readyWorker(s: Awaited<ReturnType<typeof setup>>) {
  const ref = await s.workers.deployWorker(s.deployReq);
  while ((await s.workers.getWorkerState(ref)) !== 'ready');
  return ref;
}

test('deployWorker: Ubuntu 22.04 in the policy\'s subnet, sized by profile, no public IP in private mode, NIC and OS disk deleted with it; idempotent', async () => {
  // Prepare
  const s = await setup();
  // Act
  const ref = await s.workers.deployWorker(s.deployReq);
  const again = await s.workers.deployWorker(s.deployReq);
  const states = [await s.workers.getWorkerState(ref), await s.workers.getWorkerState(ref)];
  // Assess
  assert.deepEqual(again, ref);
  assert.equal(ref.region, 'westeurope');
  assert.equal(s.w.calls.filter((c) => c.startsWith('virtualMachines.createOrUpdate')).length, 1, 'one worker per (run, VM)');
  const vm = [...s.w.vms.values()].find((v) => v.name === ref.workerId)!;
  assert.equal(vm.hardwareProfile.vmSize, 'Standard_F2s_v2');
  assert.deepEqual(vm.storageProfile.imageReference, { publisher: 'Canonical', offer: '0001-com-ubuntu-server-jammy', sku: '22_04-lts-gen2', version: 'latest' });
  assert.equal(vm.storageProfile.osDisk.deleteOption, 'Delete');
  assert.equal(vm.networkProfile.networkInterfaces[0].deleteOption, 'Delete');
  assert.equal(vm.osProfile.linuxConfiguration.disablePasswordAuthentication, true);
  assert.match(Buffer.from(vm.osProfile.customData, 'base64').toString(), /^#!\/bin\/bash\nshutdown -h \+1560 /, 'a lost worker stops itself after 26 h');
  assert.match(vm.osProfile.linuxConfiguration.ssh.publicKeys[0].keyData, /^ssh-rsa AAAAB3NzaC1yc2E/);
  assert.equal(vm.tags.owner, 'backup-team');
  assert.equal(s.w.pips.size, 0, 'no public IP');
  const nic = [...s.w.nics.values()][0];
  assert.equal(nic.ipConfigurations[0].publicIPAddress, undefined);
  assert.match(nic.ipConfigurations[0].subnet.id, /vnet-workers\/subnets\/workers$/);
  assert.deepEqual(states, ['starting', 'ready']);
});

test('deployWorker: a public worker gets a Standard public IP; no capacity (AllocationFailed) or no quota is CapacityError', async () => {
  // Prepare
  const pub = await setup({ privateNetwork: false });
  const full = await setup();
  full.w.failNext.set('virtualMachines.createOrUpdate', [
    restError(409, 'AllocationFailed', 'Allocation failed. We do not have sufficient capacity for the requested VM size in this region.'),
    restError(409, 'OperationNotAllowed', 'Operation could not be completed as it results in exceeding approved standardFSv2Family Cores quota. Current Limit: 10'),
  ]);
  // Act
  await pub.workers.deployWorker(pub.deployReq);
  const first = await full.workers.deployWorker(full.deployReq).catch((e) => e);
  const second = await full.workers.deployWorker(full.deployReq).catch((e) => e);
  // Assess
  assert.equal([...pub.w.pips.values()][0].sku.name, 'Standard');
  assert.ok([...pub.w.nics.values()][0].ipConfigurations[0].publicIPAddress.id);
  assert.ok(first instanceof CapacityError && /no capacity/.test(first.message), String(first));
  assert.ok(second instanceof CapacityError && /quota/.test(second.message), String(second));
});

test('a worker whose provisioning failed for capacity says so; a vanished worker is gone', async () => {
  // Prepare
  const s = await setup();
  const ref = await s.workers.deployWorker(s.deployReq);
  const vm = [...s.w.vms.values()].find((v) => v.name === ref.workerId)!;
  vm.provisioningState = 'Failed';
  vm.instanceView = { statuses: [{ code: 'ProvisioningState/failed/AllocationFailed', level: 'Error', message: 'Allocation failed.' }] };
  // Act / Assess
  await assert.rejects(s.workers.getWorkerState(ref), CapacityError);
  s.w.vms.clear();
  assert.equal(await s.workers.getWorkerState(ref), 'gone');
});

test('install → job → agent → result → revoke → deallocate: the bundle and job travel through revocable SAS; afterwards every SAS is refused (403) and nothing is left', async () => {
  // Prepare: the worker, and a "snapshot" that is an Azurite page blob behind a read SAS.
  const s = await setup();
  const ref = await readyWorker(s);
  const disks = blobService.getContainerClient(`disks-${seq}`);
  await disks.create();
  const image = Buffer.alloc(2 * MiB);
  randomBytes(512 * 1024).copy(image, 0);
  randomBytes(4096).copy(image, MiB + 8192);
  const page = disks.getPageBlobClient('snap-os');
  await page.create(image.length);
  await page.uploadPages(image.subarray(0, 512 * 1024), 0, 512 * 1024);
  await page.uploadPages(image.subarray(MiB, MiB + 512 * 1024), MiB, 512 * 1024);
  const snapshotName = 'tender-s-test-0';
  const snapshotId = id(RG, 'Microsoft.Compute', 'snapshots', snapshotName);
  s.w.snapshots.set(`${RG}/${snapshotName}`, { id: snapshotId, name: snapshotName, diskState: 'Unattached', provisioningState: 'Succeeded' });
  s.w.sasFor = () => `${page.url}?${generateBlobSASQueryParameters({ containerName: disks.containerName, blobName: 'snap-os', permissions: BlobSASPermissions.parse('r'), expiresOn: new Date(Date.now() + 3600_000) }, cred)}`;
  const repoContainer = `repo-${seq}`;
  await blobService.getContainerClient(repoContainer).create();
  const job: WorkerJob = {
    jobId: `job-${s.runId}`,
    runId: s.runId,
    policy: 'gold',
    vm: { vmId: s.vm.vmId, name: s.vm.name, tags: {} },
    snapshotSetId: 'ss-test',
    disks: [{ diskId: s.vm.disks[0]!.diskId, snapshotId, sizeBytes: image.length, device: 'os' }],
    repository: { url: `azblob://${az.account}/${repoContainer}/tender`, key: { passphraseEnv: 'UNUSED' } },
    tags: { policy: 'gold' },
  };

  // Act 1: install.
  const installed = await s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref });
  const again = await s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref });
  const p = (n: string) => [...s.sent.rc.parameters, ...s.sent.rc.protectedParameters].find((x: any) => x.name === n)?.value as string;
  const bundleUrl = p('BUNDLE_URL');
  const stored = [...s.w.runCommands.values()][0];

  // Assess 1: the digest the worker checked; a read-only SAS under a short stored policy; the SAS stays out of what the API returns.
  assert.equal(installed.bundleSha256, sha(s.bundleData));
  assert.deepEqual(again, installed);
  assert.equal(s.w.calls.filter((c) => c.startsWith('virtualMachineRunCommands.createOrUpdate')).length, 1);
  assert.match(bundleUrl, new RegExp(`/${s.names.bundleContainer}/tender-worker\\.tgz\\?`));
  assert.match(bundleUrl, /[?&]si=tender-/);
  assert.doesNotMatch(bundleUrl, /[?&]sp=/, 'permissions come from the stored policy, so deleting it revokes the SAS');
  const policy = (await blobService.getContainerClient(s.names.bundleContainer).getAccessPolicy()).signedIdentifiers[0]!;
  assert.equal(policy.accessPolicy?.permissions, 'r');
  const ttl = (policy.accessPolicy!.expiresOn!.getTime() - Date.now()) / 1000;
  assert.ok(ttl > 0 && ttl <= 900, `bundle SAS expires in ${ttl}s`);
  await assert.rejects(new BlockBlobClient(bundleUrl).upload('x', 1), (e: any) => e.statusCode === 403, 'the bundle SAS cannot write');
  assert.equal(stored.protectedParameters, undefined);
  assert.match(s.sent.rc.source.script, /sha256sum/);

  // Act 2: the job, the agent on the worker, the result.
  await s.workers.startJob(ref, job);
  await s.workers.startJob(ref, job);
  const queued = await s.workers.getJobStatus(ref, job.jobId);
  const agentResult = await runAzureAgent({
    workerId: ref.workerId,
    jobQueue: new QueueClient(p('TENDER_JOB_QUEUE_URL')),
    reportQueue: new QueueClient(p('TENDER_REPORT_QUEUE_URL')),
    once: true,
    idleTimeoutMs: 30_000,
    progressMs: 0,
    heartbeatMs: 3_600_000,
    openStore: (url) => openStoreFromUrl(url, { env: { TENDER_AZURE_STORAGE_CONNECTION_STRING: az.connectionString } }),
    passphrase: async () => 'correct horse battery staple',
    log: () => {},
  });
  const status = await s.workers.getJobStatus(ref, job.jobId);

  // Assess 2
  assert.equal(queued.state, 'queued');
  assert.equal((await queueService.getQueueClient(s.names.jobQueue).getProperties()).approximateMessagesCount, 0, 'the job was sent once and taken');
  assert.equal(status.state, 'succeeded', JSON.stringify(status));
  assert.equal(status.state === 'succeeded' && status.result.restorePointId, agentResult?.restorePointId);
  assert.equal(status.state === 'succeeded' && status.result.disks[0]!.sizeBytes, image.length);
  const snap = s.w.snapshots.get(`${RG}/${snapshotName}`);
  assert.equal(snap.diskState, 'ActiveSAS');
  assert.equal(snap.grantedSeconds, 24 * 3600, 'snapshot access lasts as long as the job may');
  const repo = await openRepository(await openStoreFromUrl(job.repository.url, { env: { TENDER_AZURE_STORAGE_CONNECTION_STRING: az.connectionString } }), 'correct horse battery staple');
  const points = await listRestorePoints(repo, { vmId: s.vm.vmId });
  await repo.close();
  assert.deepEqual(points.map((x) => x.id), [agentResult!.restorePointId]);

  // Act 3: revoke, then deallocate.
  const revoked = await s.workers.revokeAccess({ runId: s.runId, vmId: s.vm.vmId });
  const revokedAgain = await s.workers.revokeAccess({ runId: s.runId, vmId: s.vm.vmId });
  const bundleAfter = await fetch(bundleUrl);
  const jobQueueAfter = await new QueueClient(p('TENDER_JOB_QUEUE_URL')).peekMessages().catch((e) => e);
  const reportAfter = await new QueueClient(p('TENDER_REPORT_QUEUE_URL')).sendMessage('late').catch((e) => e);
  await s.workers.deallocateWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref });
  await s.workers.deallocateWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref });

  // Assess 3
  assert.deepEqual(revoked.revoked.map((r) => r.split(' ').slice(0, 2).join(' ')).sort(), ['bundle SAS', 'job queue', 'report queue', 'snapshot read'].sort());
  assert.deepEqual(revokedAgain.revoked, []);
  assert.equal(bundleAfter.status, 403, 'the bundle SAS is refused');
  assert.equal(jobQueueAfter.statusCode, 403, 'the job queue SAS is refused');
  assert.equal(reportAfter.statusCode, 403, 'the report queue SAS is refused');
  assert.equal(s.w.snapshots.get(`${RG}/${snapshotName}`).diskState, 'Unattached', 'endGetAccess held');
  assert.equal([...s.w.vms.values()].some((v) => v.name === ref.workerId), false, 'worker VM deleted');
  assert.ok(s.w.calls.indexOf(`virtualMachines.deallocate ${ref.workerId}`) < s.w.calls.indexOf(`virtualMachines.delete ${ref.workerId}`), 'deallocated before deleted');
  assert.equal(s.w.nics.size, 0, 'NIC deleted');
  assert.equal([...s.w.disks.keys()].some((k) => k.includes(s.names.osDisk)), false, 'OS disk deleted');
  assert.equal(await blobService.getContainerClient(s.names.bundleContainer).exists(), false);
  assert.equal(await queueService.getQueueClient(s.names.jobQueue).exists(), false);
  assert.equal(await queueService.getQueueClient(s.names.reportQueue).exists(), false);
});

test('install: a bundle whose digest does not match is refused and never run (BundleIntegrityError)', async () => {
  // Prepare: the staged bytes changed after the digest was taken.
  const s = await setup({ bundleData: Buffer.from('tampered'), bundleSha: sha(Buffer.from('original')) });
  const ref = await readyWorker(s);
  // Act / Assess
  await assert.rejects(s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref }), (e: Error) => e instanceof BundleIntegrityError && /not unpacked, not run/.test(e.message));
  assert.equal(((await s.state.read<any>(`workers/${ref.workerId}.json`))!.value).installedSha256, undefined);
  // The grants made for the failed install are still revoked by the cleanup path.
  const { revoked } = await s.workers.revokeAccess({ runId: s.runId, vmId: s.vm.vmId });
  assert.equal(revoked.length, 3);
});

test('install: a refused download and an unreachable account map to AccessDeniedError and TransientError with the fix', async () => {
  const s = await setup();
  const ref = await readyWorker(s);
  s.w.runInstall = async () => ({ exitCode: 43, output: '', error: 'the bundle download was refused (HTTP 403)', executionState: 'Failed' });
  await assert.rejects(s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref }), AccessDeniedError);
  s.w.runInstall = async () => ({ exitCode: 44, output: '', error: 'could not reach the storage account', executionState: 'Failed' });
  await assert.rejects(s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref }), (e: Error) => e instanceof TransientError && /blob private endpoint/.test(e.message));
});

test('getJobStatus: a worker silent past the heartbeat timeout has failed (WorkerFailedError)', async () => {
  // Prepare
  const s = await setup();
  const ref = await readyWorker(s);
  await s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref });
  s.w.snapshots.set(`${RG}/snap-x`, { id: id(RG, 'Microsoft.Compute', 'snapshots', 'snap-x'), name: 'snap-x', diskState: 'Unattached' });
  const job = { jobId: `job-${s.runId}`, runId: s.runId, policy: 'gold', vm: { vmId: s.vm.vmId, name: s.vm.name, tags: {} }, snapshotSetId: 'ss', disks: [{ diskId: 'd', snapshotId: id(RG, 'Microsoft.Compute', 'snapshots', 'snap-x'), sizeBytes: 1 }], repository: { url: 'azblob://a/b', key: { passphraseEnv: 'X' } }, tags: {} } as WorkerJob;
  await s.workers.startJob(ref, job);
  // Act
  const early = await s.workers.getJobStatus(ref, job.jobId);
  s.clock.advance(61_000);
  const late = await s.workers.getJobStatus(ref, job.jobId);
  // Assess
  assert.equal(early.state, 'queued');
  assert.equal(late.state, 'failed');
  assert.equal(late.state === 'failed' && late.error.name, WorkerFailedError.name);
  assert.match(late.state === 'failed' ? late.error.message : '', /has not reported for 6\ds/);
});

test('startJob: a job recorded but never sent (the activity died in between) is sent by the re-invoked step, and only once', async () => {
  // Prepare
  const s = await setup();
  const ref = await readyWorker(s);
  await s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref });
  s.w.snapshots.set(`${RG}/snap-z`, { id: id(RG, 'Microsoft.Compute', 'snapshots', 'snap-z'), name: 'snap-z', diskState: 'Unattached' });
  const job = { jobId: `job-${s.runId}`, runId: s.runId, policy: 'gold', vm: { vmId: s.vm.vmId, name: s.vm.name, tags: {} }, snapshotSetId: 'ss', disks: [{ diskId: 'd', snapshotId: id(RG, 'Microsoft.Compute', 'snapshots', 'snap-z'), sizeBytes: 1 }], repository: { url: 'azblob://a/b', key: { passphraseEnv: 'X' } }, tags: {} } as WorkerJob;
  s.w.failNext.set('snapshots.grantAccess', [restError(429, 'TooManyRequests', 'throttled')]);
  // Act
  await assert.rejects(s.workers.startJob(ref, job), TransientError);
  assert.equal(await s.state.read(`jobs/${job.jobId}.json`), undefined, 'nothing recorded when granting failed');
  // As an activity that died after recording the job and before sending it leaves it:
  const account = ((await s.state.read<any>(`workers/${ref.workerId}.json`))!.value).account;
  await s.state.write(`jobs/${job.jobId}.json`, { jobId: job.jobId, workerId: ref.workerId, runId: s.runId, vmId: s.vm.vmId, region: 'westeurope', account, status: { state: 'queued', updatedAt: '' }, heardAt: Date.now(), sent: false });
  await s.workers.startJob(ref, job);
  await s.workers.startJob(ref, job);
  // Assess
  assert.equal((await queueService.getQueueClient(s.names.jobQueue).getProperties()).approximateMessagesCount, 1);
});

test('revokeAccess: a snapshot still "ActiveSAS" after endGetAccess is revoked again until it holds; one that never clears is retried later', async () => {
  // Prepare
  const s = await setup();
  const ref = await readyWorker(s);
  await s.workers.installWorker({ runId: s.runId, vmId: s.vm.vmId, worker: ref });
  const snapId = id(RG, 'Microsoft.Compute', 'snapshots', 'snap-y');
  s.w.snapshots.set(`${RG}/snap-y`, { id: snapId, name: 'snap-y', diskState: 'Unattached' });
  const job = { jobId: `job-${s.runId}`, runId: s.runId, policy: 'gold', vm: { vmId: s.vm.vmId, name: s.vm.name, tags: {} }, snapshotSetId: 'ss', disks: [{ diskId: 'd', snapshotId: snapId, sizeBytes: 1 }], repository: { url: 'azblob://a/b', key: { passphraseEnv: 'X' } }, tags: {} } as WorkerJob;
  await s.workers.startJob(ref, job);
  s.w.stickySas = 2;
  // Act
  const { revoked } = await s.workers.revokeAccess({ runId: s.runId, vmId: s.vm.vmId });
  // Assess
  assert.ok(revoked.includes('snapshot read SAS snap-y'));
  assert.equal(s.w.calls.filter((c) => c === 'snapshots.revokeAccess snap-y').length, 3);
  assert.equal(s.w.snapshots.get(`${RG}/snap-y`).diskState, 'Unattached');

  // Prepare / Act / Assess: a revoke that never holds fails retryably and is done on the next try.
  await s.workers.startJob(ref, { ...job, jobId: `${job.jobId}-2` });
  s.w.stickySas = 100;
  await assert.rejects(s.workers.revokeAccess({ runId: s.runId, vmId: s.vm.vmId }), (e: Error) => e instanceof TransientError && /still reports ActiveSAS/.test(e.message));
  s.w.stickySas = 0;
  assert.deepEqual((await s.workers.revokeAccess({ runId: s.runId, vmId: s.vm.vmId })).revoked, ['snapshot read SAS snap-y']);
});

test('bundle SAS are https-only by default: the same SAS over http is refused', async () => {
  // Prepare
  const container = blobService.getContainerClient(`https-only-${seq++}`);
  await container.create();
  await container.getBlockBlobClient('b').upload('x', 1);
  const common = { container, blobName: 'b', policyId: 'p1', signer: cred, ttlSeconds: 600, clock: movableClock() };
  // Act
  const httpsOnly = await grantBlobReadSas({ ...common, protocol: 'https' });
  const res = await fetch(httpsOnly.url);
  const lenient = await grantBlobReadSas({ ...common, protocol: 'https,http' });
  // Assess
  assert.match(httpsOnly.url, /[?&]spr=https(&|$)/);
  assert.equal(res.status, 403, 'Azurite (http) refuses an https-only SAS');
  assert.equal((await fetch(lenient.url)).status, 200);
});

test('deallocateWorker without a worker ref finds the run\'s worker by its name and removes everything; a worker never made is not an error', async () => {
  const s = await setup();
  await s.workers.deployWorker(s.deployReq);
  await s.workers.deallocateWorker({ runId: s.runId, vmId: s.vm.vmId });
  assert.equal(s.w.vms.size, 1, 'only the protected VM is left');
  assert.equal(s.w.nics.size, 0);
  await s.workers.deallocateWorker({ runId: 'r-never', vmId: s.vm.vmId });
});

test('deployWorker: the private-network preflight of `tender check-network azure` stops a worker that would not get through (enforce), logs it (warn), or is skipped (off)', async () => {
  // Prepare: a network read that lacks the worker subnet altogether.
  let reads = 0;
  const empty = async (region: string): Promise<AzureNetworkModel> => {
    reads++;
    return { region, vnets: [], nsgs: [], privateEndpoints: [], storageAccounts: [], diskAccesses: [], dnsZones: [], dnsLinks: [], dnsARecords: [] };
  };
  const enforce = await setup({ readNetwork: empty });
  const warn = await setup({ readNetwork: empty, preflight: 'warn' });
  const off = await setup({ readNetwork: empty, preflight: 'off' });
  // Act / Assess
  await assert.rejects(enforce.workers.deployWorker(enforce.deployReq), (e: Error) => e instanceof NetworkPreflightError && /would be missing: placement/.test(e.message) && /tender check-network azure/.test(e.message));
  assert.equal(enforce.w.calls.some((c) => c.startsWith('virtualMachines.createOrUpdate')), false, 'no worker made');
  await warn.workers.deployWorker(warn.deployReq);
  assert.equal(warn.w.calls.some((c) => c.startsWith('virtualMachines.createOrUpdate')), true);
  const before = reads;
  await off.workers.deployWorker(off.deployReq);
  assert.equal(reads, before, 'off reads nothing');
});

test('revokeAccess: a grant that cannot be revoked does not keep the others alive — snapshot read SAS go first, every grant is tried', async () => {
  // Prepare: the storage account (bundle and queue SAS) is unreachable; snapshots answer.
  const state = createMemoryStateStore();
  const calls: string[] = [];
  const compute: any = {
    snapshots: {
      revokeAccess: async (_rg: string, name: string) => void calls.push(`revoke ${name}`),
      get: async () => ({ diskState: 'Unattached' }),
    },
  };
  const workers = createAzureWorkers({
    arm: { compute, network: {} as any, storage: {} as any },
    settings: parseAzureSettings({ subscriptionId: SUB, resourceGroup: 'rg', applianceId: 'tender' }),
    regions: {} as any,
    storageFor: async () => {
      throw new TransientError('storage account unreachable');
    },
    state,
    bundle: async () => ({ fileName: 'x', sha256: 'x', data: new Uint8Array() }),
    clock: { now: () => new Date(), sleep: async () => {} },
    logger: silentLogger,
  } as any);
  const h = createHash('sha256').update('vm1').digest('hex').slice(0, 16);
  const snapshot = (n: string) => `/subscriptions/${SUB}/resourceGroups/rgp/providers/Microsoft.Compute/snapshots/${n}`;
  await state.write(`grants/r1__${h}.json`, {
    runId: 'r1',
    vmId: 'vm1',
    region: 'westeurope',
    account: { id: 'a', name: 'a', blobUrl: 'https://a', queueUrl: 'https://a' },
    items: [
      { kind: 'bundle-sas', target: 'tender-b-x', blobName: 'b', policyId: 'p', revoked: false },
      { kind: 'snapshot-read', target: snapshot('parent-0'), revoked: false },
      { kind: 'job-queue-sas', target: 'tender-q-x', policyId: 'p', revoked: false },
      { kind: 'snapshot-read', target: snapshot('this-0'), revoked: false },
    ],
  });
  // Act
  await assert.rejects(workers.revokeAccess({ runId: 'r1', vmId: 'vm1' }), (e: Error) => e instanceof TransientError && /2 failed/.test(e.message) && /bundle-sas/.test(e.message) && /job-queue-sas/.test(e.message));
  // Assess: both snapshots' SAS are gone although the queue and bundle SAS could not be revoked,
  assert.deepEqual(calls, ['revoke parent-0', 'revoke this-0']);
  // and the retry tries only what still stands.
  await assert.rejects(workers.revokeAccess({ runId: 'r1', vmId: 'vm1' }), TransientError);
  assert.deepEqual(calls, ['revoke parent-0', 'revoke this-0']);
});
