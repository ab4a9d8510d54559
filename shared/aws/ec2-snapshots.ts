// Snapshots port on EC2. A snapshot set is every EBS volume of one instance at
// one moment, made by one CreateSnapshots call (crash-consistent across the
// volumes) and tagged tender:set / tender:run / tender:vm so it is found again
// as one unit: a re-invoked step finds the set by its tag instead of making a
// second one, and cleanup finds it even when its id never reached the state
// machine. In a cross-account deployment the EC2 clients act as the production
// account's role (see clients.ts).

import {
  CreateSnapshotsCommand,
  CreateTagsCommand,
  DeleteSnapshotCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  type Filter,
  type Instance,
  type Snapshot,
} from '@aws-sdk/client-ec2';
import type { DiskSnapshot, SnapshotSet, Snapshots, Tags, Vm, VmSelection } from '../ports/cloud.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { ConfigError, NotFoundError, SnapshotFailedError, TimedOutError } from '../core/errors.js';
import { awsCall, isAwsNotFound, normaliseAwsError } from './aws-errors.js';
import type { ClientsFor } from './clients.js';
import { TAG, WORKER_ROLE_VALUE, fromAwsTags, snapshotSetIdOf, toAwsTags } from './naming.js';

const GiB = 1024 ** 3;

export interface Ec2SnapshotsOptions {
  clients: Pick<ClientsFor, 'ec2'>;
  /** Regions VMs are looked for in (the deployment's Region, plus any others it covers). */
  regions: string[];
  clock?: Clock;
}

export interface Ec2Snapshots extends Snapshots {
  /** Polls until the set is ready: SnapshotFailedError as soon as one snapshot is in `error`, TimedOutError after `timeoutMs`. */
  waitForSnapshotSet(setId: string, opts?: { timeoutMs?: number; pollMs?: number }): Promise<SnapshotSet>;
}

const SNAPSHOT_FIX = 'the snapshot role needs ec2:DescribeInstances, ec2:DescribeVolumes, ec2:DescribeSnapshots, ec2:CreateSnapshots and ec2:CreateTags (on Tender-tagged snapshots) — see docs/aws.md';

export function createEc2Snapshots(opts: Ec2SnapshotsOptions): Ec2Snapshots {
  if (opts.regions.length === 0) throw new ConfigError('createEc2Snapshots: at least one Region is needed (TENDER_REGIONS or AWS_REGION)');
  const clock = opts.clock ?? systemClock;
  const ec2 = (region: string) => opts.clients.ec2(region);

  async function describeInstances(region: string, filters: Filter[]): Promise<Instance[]> {
    const out: Instance[] = [];
    let NextToken: string | undefined;
    do {
      const page = await awsCall(`ec2:DescribeInstances in ${region}`, () => ec2(region).send(new DescribeInstancesCommand({ Filters: filters, NextToken, MaxResults: 1000 })), SNAPSHOT_FIX);
      for (const r of page.Reservations ?? []) out.push(...(r.Instances ?? []));
      NextToken = page.NextToken;
    } while (NextToken);
    return out;
  }

  async function volumeSizes(region: string, ids: string[]): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    for (let i = 0; i < ids.length; i += 200) {
      const chunk = ids.slice(i, i + 200);
      const res = await awsCall(`ec2:DescribeVolumes in ${region}`, () => ec2(region).send(new DescribeVolumesCommand({ Filters: [{ Name: 'volume-id', Values: chunk }] })), SNAPSHOT_FIX);
      for (const v of res.Volumes ?? []) if (v.VolumeId) sizes.set(v.VolumeId, (v.Size ?? 0) * GiB);
    }
    return sizes;
  }

  async function toVms(region: string, instances: Instance[]): Promise<Vm[]> {
    const volumeIds = instances.flatMap((i) => (i.BlockDeviceMappings ?? []).map((b) => b.Ebs?.VolumeId).filter((x): x is string => !!x));
    const sizes = await volumeSizes(region, volumeIds);
    return instances.map((i) => {
      const tags = fromAwsTags(i.Tags);
      return {
        vmId: i.InstanceId!,
        name: tags.Name || i.InstanceId!,
        region,
        tags,
        disks: (i.BlockDeviceMappings ?? [])
          .filter((b) => b.Ebs?.VolumeId)
          .map((b) => ({ diskId: b.Ebs!.VolumeId!, sizeBytes: sizes.get(b.Ebs!.VolumeId!) ?? 0, ...(b.DeviceName ? { device: b.DeviceName } : {}) })),
      };
    });
  }

  const LIVE = { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] };
  // Tender's own workers may carry the user's tags (worker.tags): never back them up.
  const notWorker = (i: Instance) => fromAwsTags(i.Tags)[TAG.role] !== WORKER_ROLE_VALUE;

  async function describeSetSnapshots(region: string, filters: Filter[]): Promise<Snapshot[]> {
    const out: Snapshot[] = [];
    let NextToken: string | undefined;
    do {
      const page = await awsCall(
        `ec2:DescribeSnapshots in ${region}`,
        () => ec2(region).send(new DescribeSnapshotsCommand({ OwnerIds: ['self'], Filters: filters, NextToken, MaxResults: 1000 })),
        SNAPSHOT_FIX,
      );
      out.push(...(page.Snapshots ?? []));
      NextToken = page.NextToken;
    } while (NextToken);
    return out;
  }

  function toSet(region: string, setId: string, snaps: Snapshot[], devices?: Map<string, string>): SnapshotSet {
    const tags = fromAwsTags(snaps[0]?.Tags);
    const failed = snaps.filter((s) => s.State === 'error');
    const state = failed.length > 0 ? 'failed' : snaps.every((s) => s.State === 'completed') ? 'ready' : 'pending';
    const started = snaps.map((s) => s.StartTime?.getTime() ?? clock.now().getTime());
    const disks: DiskSnapshot[] = snaps
      .map((s) => {
        const t = fromAwsTags(s.Tags);
        const device = devices?.get(s.VolumeId ?? '') ?? t['tender:device'];
        return { diskId: s.VolumeId ?? t[TAG.disk] ?? s.SnapshotId!, snapshotId: s.SnapshotId!, sizeBytes: (s.VolumeSize ?? 0) * GiB, ...(device ? { device } : {}) };
      })
      .sort((a, b) => (a.device ?? a.diskId).localeCompare(b.device ?? b.diskId));
    return {
      setId,
      vmId: tags[TAG.vm] ?? '',
      region,
      runId: tags[TAG.run] ?? '',
      state,
      createdAt: new Date(Math.min(...started)).toISOString(),
      disks,
      ...(failed.length > 0 ? { failureReason: failed.map((s) => `${s.SnapshotId} (${s.VolumeId}): ${s.StateMessage || 'snapshot in error state'}`).join('; ') } : {}),
      tags,
    };
  }

  async function findSet(setId: string): Promise<SnapshotSet | undefined> {
    for (const region of opts.regions) {
      const snaps = await describeSetSnapshots(region, [{ Name: `tag:${TAG.set}`, Values: [setId] }]);
      if (snaps.length > 0) return toSet(region, setId, snaps);
    }
    return undefined;
  }

  const snapshots: Ec2Snapshots = {
    async findVms(selection: VmSelection): Promise<Vm[]> {
      const found: Vm[] = [];
      const ids = selection.ids ?? [];
      if (ids.length > 0) {
        const missing = new Set(ids);
        for (const region of opts.regions) {
          const inst = (await describeInstances(region, [{ Name: 'instance-id', Values: ids }, LIVE])).filter(notWorker);
          for (const i of inst) missing.delete(i.InstanceId!);
          found.push(...(await toVms(region, inst)));
        }
        if (missing.size > 0) {
          throw new NotFoundError(`EC2 instance(s) ${[...missing].join(', ')} not found (or terminated) in ${opts.regions.join(', ')} — fix the policy's vms.ids, or deploy Tender with the instance's Region in TENDER_REGIONS`);
        }
      }
      const tagFilters = Object.entries(selection.tags ?? {}).map(([k, v]) => ({ Name: `tag:${k}`, Values: [v] }));
      if (tagFilters.length > 0) {
        for (const region of opts.regions) {
          const inst = (await describeInstances(region, [...tagFilters, LIVE])).filter(notWorker);
          found.push(...(await toVms(region, inst)));
        }
      }
      return [...new Map(found.map((v) => [v.vmId, v])).values()];
    },

    async createSnapshotSet({ runId, vm, tags }): Promise<SnapshotSet> {
      const setId = snapshotSetIdOf(runId, vm.vmId);
      const region = vm.region;
      const devices = new Map(vm.disks.filter((d) => d.device).map((d) => [d.diskId, d.device!]));
      const existing = await describeSetSnapshots(region, [{ Name: `tag:${TAG.set}`, Values: [setId] }]);
      if (existing.length > 0) return toSet(region, setId, existing, devices);
      const allTags: Tags = { ...tags, [TAG.set]: setId, [TAG.run]: runId, [TAG.vm]: vm.vmId };
      const res = await awsCall(
        `ec2:CreateSnapshots of instance ${vm.vmId} in ${region}`,
        () =>
          ec2(region).send(
            new CreateSnapshotsCommand({
              InstanceSpecification: { InstanceId: vm.vmId, ExcludeBootVolume: false },
              Description: `Tender snapshot set ${setId}`,
              TagSpecifications: [{ ResourceType: 'snapshot', Tags: toAwsTags(allTags) }],
            }),
          ),
        SNAPSHOT_FIX,
      );
      const snaps: Snapshot[] = (res.Snapshots ?? []).map((s) => ({
        SnapshotId: s.SnapshotId,
        VolumeId: s.VolumeId,
        State: s.State,
        StateMessage: undefined,
        StartTime: s.StartTime,
        VolumeSize: s.VolumeSize,
        Tags: s.Tags ?? toAwsTags(allTags),
      }));
      if (snaps.length === 0) throw new NotFoundError(`ec2:CreateSnapshots of instance ${vm.vmId} made no snapshot — the instance has no EBS volumes`);
      // The device name travels with each snapshot, so a restore can put the disk back where it was.
      for (const s of snaps) {
        const device = devices.get(s.VolumeId ?? '');
        if (!device) continue;
        await awsCall(`ec2:CreateTags on ${s.SnapshotId}`, () => ec2(region).send(new CreateTagsCommand({ Resources: [s.SnapshotId!], Tags: [{ Key: 'tender:device', Value: device }] })), SNAPSHOT_FIX);
      }
      return toSet(region, setId, snaps, devices);
    },

    async getSnapshotSet(setId: string): Promise<SnapshotSet> {
      const set = await findSet(setId);
      if (!set) throw new NotFoundError(`snapshot set ${setId} does not exist in ${opts.regions.join(', ')} (deleted, or made in another account)`);
      return set;
    },

    async listSnapshotSets(vmId: string): Promise<SnapshotSet[]> {
      const out: SnapshotSet[] = [];
      for (const region of opts.regions) {
        const snaps = await describeSetSnapshots(region, [
          { Name: `tag:${TAG.vm}`, Values: [vmId] },
          { Name: 'tag-key', Values: [TAG.set] },
        ]);
        const bySet = new Map<string, Snapshot[]>();
        for (const s of snaps) {
          const id = fromAwsTags(s.Tags)[TAG.set]!;
          bySet.set(id, [...(bySet.get(id) ?? []), s]);
        }
        for (const [id, list] of bySet) out.push(toSet(region, id, list));
      }
      return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    },

    async deleteSnapshotSet(setId: string): Promise<void> {
      for (const region of opts.regions) {
        const snaps = await describeSetSnapshots(region, [{ Name: `tag:${TAG.set}`, Values: [setId] }]);
        for (const s of snaps) {
          try {
            await ec2(region).send(new DeleteSnapshotCommand({ SnapshotId: s.SnapshotId }));
          } catch (e) {
            if (isAwsNotFound(e)) continue;
            throw normaliseAwsError(e, `ec2:DeleteSnapshot ${s.SnapshotId} of set ${setId}`, 'the role needs ec2:DeleteSnapshot on snapshots tagged tender:appliance; a snapshot an AMI uses must be deregistered first');
          }
        }
      }
    },

    async waitForSnapshotSet(setId, w = {}) {
      const deadline = clock.now().getTime() + (w.timeoutMs ?? 6 * 3600_000);
      for (;;) {
        const set = await snapshots.getSnapshotSet(setId);
        if (set.state === 'failed') throw new SnapshotFailedError(`snapshot set ${setId} failed: ${set.failureReason} — check the instance's volumes (and the KMS key of encrypted ones) and run again`);
        if (set.state === 'ready') return set;
        if (clock.now().getTime() >= deadline) throw new TimedOutError(`snapshot set ${setId} was still pending after ${Math.round((w.timeoutMs ?? 0) / 1000)}s`);
        await clock.sleep(w.pollMs ?? 15_000);
      }
    },
  };
  return snapshots;
}
