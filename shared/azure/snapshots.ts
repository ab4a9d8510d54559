// Snapshots of Azure VMs: one incremental snapshot per managed disk, all
// tagged with the set id, run and VM so the set is found again and handled as
// one unit (seed 000: "treat them as a single unit"). Incremental snapshots
// of one disk share a family, which is what lets the worker diff against the
// parent. In a private deployment every snapshot exports only through the
// region's disk access (NetworkAccessPolicy AllowPrivate), so the SAS the
// worker reads through is useless outside the VNET.
//
// Azure snapshots disks one by one: a multi-disk set is consistent per disk,
// not across disks (documented in docs/azure.md).

import type { Snapshot, VirtualMachine } from '@azure/arm-compute';
import type { SnapshotSet, Snapshots, Tags, Vm, VmDisk, VmSelection } from '../ports/cloud.js';
import type { Clock } from '../core/clock.js';
import { ConfigError, LockedError, NotFoundError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { all, started, type ArmClients } from './clients.js';
import { arm, armMaybe } from './arm-errors.js';
import { parseResourceId, snapshotNameOf, snapshotSetIdOf } from './names.js';
import type { Regions } from './region.js';
import type { AzureSettings } from './settings.js';

const GiB = 1024 ** 3;

export const SET_TAG = 'tender:set';
const RUN_TAG = 'tender:run';
const VM_TAG = 'tender:vm';
const DISK_TAG = 'tender:disk';
const DEVICE_TAG = 'tender:device';
const COUNT_TAG = 'tender:set-size';
const CREATED_TAG = 'tender:created';

export interface AzureSnapshotsOptions {
  arm: ArmClients;
  settings: AzureSettings;
  regions: Regions;
  clock: Clock;
  logger: Logger;
}

/** Where the worker and the grant code find a snapshot again: its resource group and name, from its id. */
export function snapshotLocator(snapshotId: string): { resourceGroup: string; name: string } {
  const p = parseResourceId(snapshotId);
  if (!p.resourceGroup) throw new ConfigError(`"${snapshotId}" is not a snapshot resource id`);
  return { resourceGroup: p.resourceGroup, name: p.name };
}

export function createAzureSnapshots(opts: AzureSnapshotsOptions): Snapshots {
  const rg = opts.settings.resourceGroup;
  const compute = opts.arm.compute;

  async function toVm(vm: VirtualMachine): Promise<Vm> {
    const id = vm.id!;
    const vmRg = parseResourceId(id).resourceGroup!;
    const refs: Array<{ diskId: string; device: string }> = [];
    const os = vm.storageProfile?.osDisk?.managedDisk?.id;
    if (os) refs.push({ diskId: os, device: 'os' });
    for (const d of vm.storageProfile?.dataDisks ?? []) {
      if (d.managedDisk?.id) refs.push({ diskId: d.managedDisk.id, device: `lun${d.lun}` });
    }
    if (refs.length === 0) {
      throw new ConfigError(`VM ${vm.name} (${id}) has no managed disks: Tender backs up managed disks only`);
    }
    const disks: VmDisk[] = [];
    for (const r of refs) {
      const p = parseResourceId(r.diskId);
      const disk = await arm(`reading disk ${p.name} of VM ${vm.name}`, () => compute.disks.get(p.resourceGroup ?? vmRg, p.name));
      disks.push({ diskId: disk.id ?? r.diskId, sizeBytes: disk.diskSizeBytes ?? (disk.diskSizeGB ?? 0) * GiB, device: r.device });
    }
    return { vmId: id, name: vm.name!, region: (vm.location ?? '').toLowerCase(), disks, tags: { ...(vm.tags ?? {}) } };
  }

  async function setMembers(filter: (s: Snapshot) => boolean): Promise<Snapshot[]> {
    const list = await arm(`listing snapshots in resource group ${rg}`, () => all(compute.snapshots.listByResourceGroup(rg)));
    return list.filter((s) => s.tags?.[SET_TAG] && filter(s));
  }

  function toSet(setId: string, members: Snapshot[]): SnapshotSet {
    const first = members[0]!;
    const t = first.tags ?? {};
    const expected = Number(t[COUNT_TAG] ?? members.length);
    const sorted = [...members].sort((a, b) => (a.name ?? '').localeCompare(b.name ?? '', undefined, { numeric: true }));
    const failed = members.find((s) => (s.provisioningState ?? '').toLowerCase() === 'failed');
    const ready = members.every((s) => (s.provisioningState ?? '').toLowerCase() === 'succeeded' && (s.completionPercent === undefined || s.completionPercent >= 100));
    let state: SnapshotSet['state'] = ready && members.length >= expected ? 'ready' : 'pending';
    let failureReason: string | undefined;
    if (failed) {
      state = 'failed';
      failureReason = `snapshot ${failed.name} of disk ${failed.tags?.[DISK_TAG] ?? '?'} is in state Failed`;
    } else if (members.length < expected) {
      state = 'failed';
      failureReason = `only ${members.length} of the set's ${expected} disk snapshots exist (one was deleted or never made)`;
    }
    const tags: Tags = {};
    for (const [k, v] of Object.entries(t)) if (typeof v === 'string') tags[k] = v;
    return {
      setId,
      vmId: t[VM_TAG] ?? '',
      region: (first.location ?? '').toLowerCase(),
      runId: t[RUN_TAG] ?? '',
      state,
      createdAt: t[CREATED_TAG] ?? first.timeCreated?.toISOString() ?? '',
      disks: sorted.map((s) => ({
        diskId: s.tags?.[DISK_TAG] ?? s.creationData?.sourceResourceId ?? '',
        snapshotId: s.id!,
        sizeBytes: s.diskSizeBytes ?? (s.diskSizeGB ?? 0) * GiB,
        ...(s.tags?.[DEVICE_TAG] ? { device: s.tags[DEVICE_TAG] } : {}),
      })),
      ...(failureReason ? { failureReason } : {}),
      tags,
    };
  }

  return {
    async findVms(selection: VmSelection): Promise<Vm[]> {
      const found: VirtualMachine[] = [];
      for (const id of selection.ids ?? []) {
        const p = parseResourceId(id);
        if (!p.resourceGroup || !/virtualMachines/i.test(id)) {
          throw new ConfigError(`policy vms.ids entry "${id}" is not a VM resource id: on Azure give /subscriptions/…/resourceGroups/…/providers/Microsoft.Compute/virtualMachines/<name>`);
        }
        const vm = await armMaybe(`reading VM ${p.name}`, () => compute.virtualMachines.get(p.resourceGroup!, p.name));
        if (!vm) throw new NotFoundError(`VM ${id} does not exist (or the Function app's identity cannot see it) — fix the policy's vms.ids`);
        found.push(vm);
      }
      const want = Object.entries(selection.tags ?? {});
      if (want.length > 0) {
        const list = await arm('listing the subscription\'s VMs', () => all(compute.virtualMachines.listAll()));
        for (const vm of list) if (want.every(([k, v]) => vm.tags?.[k] === v)) found.push(vm);
      }
      const unique = [...new Map(found.map((v) => [v.id!.toLowerCase(), v])).values()];
      return Promise.all(unique.map(toVm));
    },

    async createSnapshotSet({ runId, vm, tags, privateNetwork }): Promise<SnapshotSet> {
      const setId = snapshotSetIdOf(runId, vm.vmId);
      const existing = await setMembers((s) => s.tags?.[SET_TAG] === setId);
      const createdAt = existing[0]?.tags?.[CREATED_TAG] ?? opts.clock.now().toISOString();
      // Exported only through the disk access when the deployment or the policy is private: a
      // private policy's snapshot SAS must not work from the internet, whatever the app setting.
      const diskAccessId = opts.settings.privateNetwork || privateNetwork === true ? await opts.regions.diskAccess(vm.region) : undefined;
      const made: Snapshot[] = [];
      for (const [i, d] of vm.disks.entries()) {
        const name = snapshotNameOf(setId, i);
        const have = existing.find((s) => s.name === name);
        if (have) {
          made.push(have);
          continue;
        }
        const snapshot: Snapshot = {
          location: vm.region,
          incremental: true,
          creationData: { createOption: 'Copy', sourceResourceId: d.diskId },
          tags: {
            ...tags,
            [SET_TAG]: setId,
            [RUN_TAG]: runId,
            [VM_TAG]: vm.vmId,
            [DISK_TAG]: d.diskId,
            [COUNT_TAG]: String(vm.disks.length),
            [CREATED_TAG]: createdAt,
            ...(d.device ? { [DEVICE_TAG]: d.device } : {}),
          },
          ...(diskAccessId ? { networkAccessPolicy: 'AllowPrivate', diskAccessId } : {}),
        };
        // Only started here: checkSnapshot polls until Azure has copied the disk.
        await arm(`starting snapshot ${name} of disk ${parseResourceId(d.diskId).name}`, () => started(compute.snapshots.createOrUpdate(rg, name, snapshot)));
        made.push({ ...snapshot, name, id: `/subscriptions/${opts.settings.subscriptionId}/resourceGroups/${rg}/providers/Microsoft.Compute/snapshots/${name}`, provisioningState: 'Creating' });
      }
      opts.logger.info('snapshot set started', { setId, vmId: vm.vmId, disks: vm.disks.length, reused: existing.length });
      return toSet(setId, made);
    },

    async getSnapshotSet(setId: string): Promise<SnapshotSet> {
      const members = await setMembers((s) => s.tags?.[SET_TAG] === setId);
      if (members.length === 0) throw new NotFoundError(`snapshot set ${setId} does not exist in resource group ${rg} (deleted, or its tags were removed — do not remove tender:* tags)`);
      return toSet(setId, members);
    },

    async listSnapshotSets(vmId: string): Promise<SnapshotSet[]> {
      const members = await setMembers((s) => (s.tags?.[VM_TAG] ?? '').toLowerCase() === vmId.toLowerCase());
      const bySet = new Map<string, Snapshot[]>();
      for (const s of members) bySet.set(s.tags![SET_TAG]!, [...(bySet.get(s.tags![SET_TAG]!) ?? []), s]);
      return [...bySet.entries()].map(([id, m]) => toSet(id, m)).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    },

    async deleteSnapshotSet(setId: string): Promise<void> {
      const members = await setMembers((s) => s.tags?.[SET_TAG] === setId);
      for (const s of members) {
        const name = s.name!;
        try {
          await arm(`deleting snapshot ${name}`, () => compute.snapshots.delete(rg, name));
        } catch (e) {
          // A snapshot with a live SAS cannot be deleted: end it and try once more.
          if (!(e instanceof LockedError)) throw e;
          await arm(`revoking access to snapshot ${name}`, () => compute.snapshots.revokeAccess(rg, name));
          await arm(`deleting snapshot ${name}`, () => compute.snapshots.delete(rg, name));
        }
      }
    },
  };
}
