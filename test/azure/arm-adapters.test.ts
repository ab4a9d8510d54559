// The ARM side of the Azure adapters against mocked management clients:
// error mapping, snapshot sets, and the regional prerequisites of seed 000.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixedClock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import { AccessDeniedError, CapacityError, ConfigError, LockedError, NetworkPreflightError, NotFoundError, TransientError } from '../../shared/core/errors.js';
import { normaliseArmError } from '../../shared/azure/arm-errors.js';
import { parseAzureSettings, azureSettingsFromEnv } from '../../shared/azure/settings.js';
import { createRegions } from '../../shared/azure/region.js';
import { createAzureSnapshots } from '../../shared/azure/snapshots.js';
import { snapshotSetIdOf, workerNames, regionalAccountNameOf } from '../../shared/azure/names.js';
import { RG, SUB, addProtectedVm, addWorkerNetwork, createArmWorld, restError } from './arm-mock.js';

const settings = (over: Record<string, unknown> = {}) => parseAzureSettings({ subscriptionId: SUB, resourceGroup: RG, applianceId: 'tender', ...over });

function snapshotsFor(w: ReturnType<typeof createArmWorld>, over: Record<string, unknown> = {}) {
  const s = settings(over);
  const regions = createRegions({ arm: w.clients, settings: s, logger: silentLogger });
  return createAzureSnapshots({ arm: w.clients, settings: s, regions, clock: fixedClock('2024-03-01T02:00:00Z'), logger: silentLogger });
}

test('ARM errors become named errors that say what to do', () => {
  const cases: Array<[Error, Function, RegExp]> = [
    [restError(429, 'TooManyRequests', 'Too many requests'), TransientError, /retried/],
    [restError(503, 'ServiceUnavailable', 'busy'), TransientError, /retried/],
    [restError(409, 'AnotherOperationInProgress', 'Operation on VM is in progress'), TransientError, /retried/],
    [restError(409, 'OperationNotAllowed', 'Operation could not be completed as it results in exceeding approved standardFSv2Family Cores quota.'), CapacityError, /quota.*maxConcurrency/],
    [restError(409, 'AllocationFailed', 'Allocation failed. We do not have sufficient capacity for the requested VM size in this region.'), CapacityError, /another size/],
    [restError(409, 'OperationNotAllowed', 'Snapshot s1 has active SAS uri.'), LockedError, /active SAS/],
    [restError(403, 'AuthorizationFailed', 'The client does not have authorization'), AccessDeniedError, /managed identity/],
    [restError(404, 'ResourceNotFound', 'not found'), NotFoundError, /not found/],
    [restError(400, 'InvalidParameter', 'vmSize is invalid'), ConfigError, /check the Azure settings/],
    [Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), TransientError, /no answer/],
  ];
  for (const [err, cls, msg] of cases) {
    const out = normaliseArmError(err, 'creating worker VM w1');
    assert.ok(out instanceof cls, `${(err as any).code ?? err.message} → ${out.name}`);
    assert.match(out.message, /^creating worker VM w1/);
    assert.match(out.message, msg);
  }
});

test('settings: strict, from application settings, with the setting named in the message', () => {
  assert.throws(() => parseAzureSettings({ subscriptionId: 'nope', resourceGroup: RG, applianceId: 'tender' }), /subscriptionId must be the subscription id/);
  const s = azureSettingsFromEnv({ TENDER_AZURE_SUBSCRIPTION_ID: SUB, TENDER_AZURE_RESOURCE_GROUP: RG, TENDER_APPLIANCE_ID: 'prod', TENDER_AZURE_PRIVATE_NETWORK: 'false' });
  assert.equal(s.privateNetwork, false);
  assert.equal(s.sasProtocol, 'https', 'SAS are https-only unless told otherwise');
  assert.equal(s.workerImage.offer, '0001-com-ubuntu-server-jammy');
  assert.equal(s.workerImage.sku, '22_04-lts-gen2');
});

test('names: derived from (run, VM) alone, inside Azure\'s limits', () => {
  const vmId = `/subscriptions/${SUB}/resourceGroups/rg-apps/providers/Microsoft.Compute/virtualMachines/${'x'.repeat(64)}`;
  const n = workerNames('r20240301T0200Z-' + 'p'.repeat(63), vmId);
  assert.deepEqual(workerNames('r20240301T0200Z-' + 'p'.repeat(63), vmId), n);
  assert.ok(n.vm.length <= 64 && /^[a-z0-9-]+$/.test(n.vm));
  for (const q of [n.bundleContainer, n.jobQueue, n.reportQueue]) assert.match(q, /^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/);
  assert.match(regionalAccountNameOf(SUB, 'tender', 'westeurope'), /^[a-z0-9]{3,24}$/);
});

test('findVms: by resource id (OS and data disks with sizes and LUNs) and by tags; an unknown id is NotFoundError naming it', async () => {
  // Prepare
  const w = createArmWorld();
  const web = addProtectedVm(w, 'web-1', { dataDisksGiB: [64, 128], tags: { backup: 'gold' } });
  addProtectedVm(w, 'db-1', { tags: { backup: 'gold' } });
  addProtectedVm(w, 'dev-1', { tags: { backup: 'none' } });
  const snaps = snapshotsFor(w);
  // Act
  const byId = await snaps.findVms({ ids: [web.id] });
  const byTag = await snaps.findVms({ tags: { backup: 'gold' } });
  // Assess
  assert.deepEqual(byId[0]!.disks.map((d) => [d.device, d.sizeBytes / 1024 ** 3]), [['os', 30], ['lun0', 64], ['lun1', 128]]);
  assert.equal(byId[0]!.region, 'westeurope');
  assert.deepEqual(byTag.map((v) => v.name).sort(), ['db-1', 'web-1']);
  await assert.rejects(snaps.findVms({ ids: [web.id.replace('web-1', 'web-9')] }), (e: Error) => e instanceof NotFoundError && /web-9/.test(e.message));
  await assert.rejects(snaps.findVms({ ids: ['web-1'] }), /not a VM resource id/);
});

test('createSnapshotSet: one incremental snapshot per disk, tagged as one set, exported through the disk access; a second call makes nothing new', async () => {
  // Prepare
  const w = createArmWorld();
  const vmRaw = addProtectedVm(w, 'web-1', { dataDisksGiB: [64] });
  const snaps = snapshotsFor(w);
  const [vm] = await snaps.findVms({ ids: [vmRaw.id] });
  // Act
  const set = await snaps.createSnapshotSet({ runId: 'r1', vm: vm!, tags: { 'tender:policy': 'gold' } });
  const again = await snaps.createSnapshotSet({ runId: 'r1', vm: vm!, tags: { 'tender:policy': 'gold' } });
  // Assess
  assert.equal(set.setId, snapshotSetIdOf('r1', vm!.vmId));
  assert.equal(again.setId, set.setId);
  assert.equal(w.calls.filter((c) => c.startsWith('snapshots.createOrUpdate')).length, 2, 'two disks, two snapshots, once');
  const made = [...w.snapshots.values()];
  assert.ok(made.every((s) => s.incremental === true && s.creationData.createOption === 'Copy'));
  assert.ok(made.every((s) => s.tags['tender:set'] === set.setId && s.tags['tender:run'] === 'r1' && s.tags['tender:vm'] === vm!.vmId && s.tags['tender:policy'] === 'gold'));
  assert.ok(made.every((s) => s.networkAccessPolicy === 'AllowPrivate' && /diskAccesses\/tender-da-tender-westeurope$/.test(s.diskAccessId)), 'private export only');
  assert.equal(set.state, 'pending');
});

test('getSnapshotSet: pending while Azure copies, ready when every disk is copied, failed with the reason; listSnapshotSets groups by set', async () => {
  // Prepare
  const w = createArmWorld();
  const vmRaw = addProtectedVm(w, 'web-1', { dataDisksGiB: [64] });
  const snaps = snapshotsFor(w, { privateNetwork: false });
  const [vm] = await snaps.findVms({ ids: [vmRaw.id] });
  const set = await snaps.createSnapshotSet({ runId: 'r1', vm: vm!, tags: {} });
  // Act
  const first = await snaps.getSnapshotSet(set.setId);
  const second = await snaps.getSnapshotSet(set.setId);
  [...w.snapshots.values()][1].provisioningState = 'Failed';
  const failed = await snaps.getSnapshotSet(set.setId);
  // Assess
  assert.equal(first.state, 'pending');
  assert.equal(second.state, 'ready');
  assert.deepEqual(second.disks.map((d) => d.device), ['os', 'lun0']);
  assert.equal(second.disks[0]!.diskId, vm!.disks[0]!.diskId);
  assert.equal(failed.state, 'failed');
  assert.match(failed.failureReason!, /Failed/);
  assert.ok([...w.snapshots.values()].every((s) => s.networkAccessPolicy === undefined), 'public deployment, public policy: default export policy');
  // A private policy in a deployment set public: still exported through the disk access only.
  const priv = await snaps.createSnapshotSet({ runId: 'r2', vm: vm!, tags: {}, privateNetwork: true });
  const privSnaps = [...w.snapshots.values()].filter((s) => s.tags['tender:set'] === priv.setId);
  assert.equal(privSnaps.length, 2);
  assert.ok(privSnaps.every((s) => s.networkAccessPolicy === 'AllowPrivate' && /diskAccesses\//.test(s.diskAccessId)), 'a private policy\'s snapshots are private');
  assert.deepEqual((await snaps.listSnapshotSets(vm!.vmId)).map((s) => s.setId).sort(), [set.setId, priv.setId].sort());
  await assert.rejects(snaps.getSnapshotSet('ss-nope'), NotFoundError);
});

test('deleteSnapshotSet: a snapshot with an active SAS (409) has its access revoked and is deleted; deleting again is not an error', async () => {
  // Prepare
  const w = createArmWorld();
  const vmRaw = addProtectedVm(w, 'web-1');
  const snaps = snapshotsFor(w, { privateNetwork: false });
  const [vm] = await snaps.findVms({ ids: [vmRaw.id] });
  const set = await snaps.createSnapshotSet({ runId: 'r1', vm: vm!, tags: {} });
  [...w.snapshots.values()][0].diskState = 'ActiveSAS';
  // Act
  await snaps.deleteSnapshotSet(set.setId);
  await snaps.deleteSnapshotSet(set.setId);
  // Assess
  assert.equal(w.snapshots.size, 0);
  assert.ok(w.calls.some((c) => c.startsWith('snapshots.revokeAccess')));
});

test('snapshot calls that are throttled (429) surface as TransientError for the orchestrator to retry', async () => {
  // Prepare
  const w = createArmWorld();
  const vmRaw = addProtectedVm(w, 'web-1');
  const snaps = snapshotsFor(w, { privateNetwork: false });
  const [vm] = await snaps.findVms({ ids: [vmRaw.id] });
  w.failNext.set('snapshots.createOrUpdate', [restError(429, 'TooManyRequests', 'The request is being throttled as the limit has been reached for operation type - Write_Snapshot')]);
  // Act / Assess
  await assert.rejects(snaps.createSnapshotSet({ runId: 'r1', vm: vm!, tags: {} }), (e: Error) => e instanceof TransientError && /starting snapshot/.test(e.message));
  const set = await snaps.createSnapshotSet({ runId: 'r1', vm: vm!, tags: {} });
  assert.equal(set.disks.length, 1);
});

test('region: the storage account carrying the deployment tag is found; without one it is created locked down', async () => {
  // Prepare
  const found = createArmWorld();
  addWorkerNetwork(found, { account: { name: 'tenderweu1' }, endpoints: ['blob', 'queue'] });
  const empty = createArmWorld();
  addWorkerNetwork(empty);
  const s = settings({ privateNetwork: false });
  // Act
  const a = await createRegions({ arm: found.clients, settings: s, logger: silentLogger }).account('West Europe');
  const b = await createRegions({ arm: empty.clients, settings: s, logger: silentLogger }).account('westeurope');
  // Assess
  assert.equal(a.name, 'tenderweu1');
  assert.ok(!found.calls.some((c) => c.startsWith('storageAccounts.beginCreateAndWait')));
  const created = [...empty.accounts.values()][0];
  assert.equal(b.name, regionalAccountNameOf(SUB, 'tender', 'westeurope'));
  assert.equal(created.tags['tender:appliance'], 'tender');
  assert.equal(created.enableHttpsTrafficOnly, true);
  assert.equal(created.allowBlobPublicAccess, false);
  assert.equal(created.minimumTlsVersion, 'TLS1_2');
});

test('region: in private mode the blob and queue endpoints are checked; a missing one fails with the command that creates it', async () => {
  // Prepare
  const w = createArmWorld();
  const { placement } = addWorkerNetwork(w, { account: { name: 'tenderweu1' }, endpoints: ['blob'] });
  const regions = createRegions({ arm: w.clients, settings: settings(), logger: silentLogger });
  // Act / Assess
  await assert.rejects(regions.prepare({ region: 'westeurope', placement, privateNetwork: true }), (e: Error) => {
    assert.ok(e instanceof NetworkPreflightError);
    assert.match(e.message, /tenderweu1 has no queue private endpoint in the worker VNET vnet-workers/);
    assert.match(e.message, /az network private-endpoint create .*--group-id queue/);
    return true;
  });
});

test('region: with the private DNS zones named, missing endpoints are created and registered, and the disk access is created with its endpoint', async () => {
  // Prepare
  const w = createArmWorld();
  const { placement } = addWorkerNetwork(w, { account: { name: 'tenderweu1' }, endpoints: ['blob'] });
  const zone = (z: string) => `/subscriptions/${SUB}/resourceGroups/rg-dns/providers/Microsoft.Network/privateDnsZones/${z}`;
  const regions = createRegions({ arm: w.clients, settings: settings({ privateDnsZoneIds: { blob: zone('privatelink.blob.core.windows.net'), queue: zone('privatelink.queue.core.windows.net') } }), logger: silentLogger });
  // Act
  const env = await regions.prepare({ region: 'westeurope', placement, privateNetwork: true });
  const again = await createRegions({ arm: w.clients, settings: settings({ privateDnsZoneIds: { blob: zone('privatelink.blob.core.windows.net') } }), logger: silentLogger }).prepare({ region: 'westeurope', placement, privateNetwork: true });
  // Assess
  assert.equal(env.subnetId, placement.subnet);
  assert.match(env.diskAccessId!, /diskAccesses\/tender-da-tender-westeurope$/);
  const groups = [...w.endpoints.values()].flatMap((e) => e.privateLinkServiceConnections.map((c: any) => c.groupIds[0])).sort();
  assert.deepEqual(groups, ['blob', 'disks', 'queue'], 'queue and disk-access endpoints added next to the existing blob one');
  assert.equal(w.dnsGroups.size, 2, 'each new endpoint registered in its DNS zone');
  assert.equal(again.diskAccessId, env.diskAccessId, 'the disk access is reused');
  assert.equal(w.diskAccesses.size, 1);
});

test('region: a placement that names no subnet of the region is a ConfigError saying what to set', async () => {
  const w = createArmWorld();
  addWorkerNetwork(w, { account: { name: 'tenderweu1' } });
  const regions = createRegions({ arm: w.clients, settings: settings({ privateNetwork: false }), logger: silentLogger });
  await assert.rejects(regions.prepare({ region: 'northeurope', privateNetwork: false }), /no worker placement for region northeurope: set worker.placement.northeurope.subnet/);
  await assert.rejects(
    regions.prepare({ region: 'westeurope', placement: { subnet: placementMissing(), securityGroups: [] }, privateNetwork: false }),
    (e: Error) => e instanceof ConfigError && /does not exist — fix worker.placement.westeurope/.test(e.message),
  );
});

function placementMissing() {
  return `/subscriptions/${SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-workers/subnets/nope`;
}
