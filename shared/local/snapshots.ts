// Snapshots of local VMs, whose disks are raw image files. A snapshot set is a
// folder .tender/snapshots/<setId>/ holding a point-in-time copy of every disk
// plus its block digest map (so the next snapshot yields a changed-block
// list), described by set.json. The copy runs in the background, as a cloud
// snapshot completes after the call that starts it: callers poll the state.
//
// Locally a disk snapshot's id is the absolute path of its copy: the worker
// opens it directly and the repository records it, so the next run's parent
// lookup finds the restore point made from it.

import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskSnapshot, SnapshotSet, Snapshots, Tags, Vm, VmSelection } from '../ports/cloud.js';
import type { LocalVm } from '../core/config.js';
import type { Clock } from '../core/clock.js';
import { NotFoundError, ValidationError } from '../core/errors.js';
import { pointInTimeCopy } from './sparse-copy.js';
import { writeBlockDigestMap } from '../../worker/sources/image-file.js';

export interface LocalSnapshotsOptions {
  /** The config's local VMs, disk paths already absolute. */
  vms: LocalVm[];
  /** .tender (snapshots go under <workDir>/snapshots). */
  workDir: string;
  clock: Clock;
  /** Test hook: runs before each disk copy. */
  beforeCopy?: (set: SnapshotSet, diskId: string) => Promise<void> | void;
}

export function snapshotSetIdOf(runId: string, vmId: string): string {
  return `ss-${runId}-${vmId}`.replace(/[^A-Za-z0-9_.-]/g, '-');
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(`${path}.tmp`, JSON.stringify(value, null, 2));
  await rename(`${path}.tmp`, path);
}

export function createLocalSnapshots(opts: LocalSnapshotsOptions): Snapshots & { settle(): Promise<void> } {
  const root = join(opts.workDir, 'snapshots');
  const inFlight = new Map<string, Promise<void>>();
  const setFile = (setId: string) => join(root, setId, 'set.json');

  async function readSet(setId: string): Promise<(SnapshotSet & { tags: Tags }) | undefined> {
    try {
      return JSON.parse(await readFile(setFile(setId), 'utf8'));
    } catch (e: any) {
      if (e?.code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async function toVm(v: LocalVm): Promise<Vm> {
    const disks = await Promise.all(
      v.disks.map(async (d) => {
        try {
          const st = await stat(d.path);
          if (!st.isFile()) throw new ValidationError(`local vm "${v.id}": disk "${d.id}" at ${d.path} is not a file — point it at a raw disk image`);
          return { diskId: d.id, sizeBytes: st.size, device: d.id };
        } catch (e: any) {
          if (e?.code === 'ENOENT') throw new NotFoundError(`local vm "${v.id}": disk "${d.id}" image ${d.path} does not exist — fix local.vms in tender.config.yaml or run npm start to make the demo VMs`);
          throw e;
        }
      }),
    );
    return { vmId: v.id, name: v.name ?? v.id, region: 'local', disks, tags: v.tags };
  }

  async function copyAll(set: SnapshotSet & { tags: Tags }, vm: LocalVm): Promise<void> {
    try {
      for (const d of set.disks) {
        if (!(await readSet(set.setId))) return; // deleted while copying
        await opts.beforeCopy?.(set, d.diskId);
        const src = vm.disks.find((x) => x.id === d.diskId)!.path;
        await pointInTimeCopy(src, d.snapshotId);
        await writeBlockDigestMap(d.snapshotId);
      }
      if (await readSet(set.setId)) await writeJson(setFile(set.setId), { ...set, state: 'ready' });
    } catch (e) {
      const reason = (e as Error).message;
      // The set may have been deleted meanwhile (cleanup): then there is nothing to mark.
      if (await readSet(set.setId)) await writeJson(setFile(set.setId), { ...set, state: 'failed', failureReason: reason });
    }
  }

  return {
    async findVms(selection: VmSelection): Promise<Vm[]> {
      const out: LocalVm[] = [];
      for (const id of selection.ids ?? []) {
        const v = opts.vms.find((x) => x.id === id);
        if (!v) throw new NotFoundError(`VM "${id}" is not among the local VMs (${opts.vms.map((x) => x.id).join(', ') || 'none'}) — add it to local.vms or fix the policy's vms.ids`);
        out.push(v);
      }
      const tags = selection.tags ?? {};
      if (Object.keys(tags).length > 0) {
        for (const v of opts.vms) if (Object.entries(tags).every(([k, val]) => v.tags[k] === val)) out.push(v);
      }
      const unique = [...new Map(out.map((v) => [v.id, v])).values()];
      return Promise.all(unique.map(toVm));
    },

    async createSnapshotSet({ runId, vm, tags }): Promise<SnapshotSet> {
      const setId = snapshotSetIdOf(runId, vm.vmId);
      const existing = await readSet(setId);
      if (existing) return existing;
      const local = opts.vms.find((x) => x.id === vm.vmId);
      if (!local) throw new NotFoundError(`VM "${vm.vmId}" is not among the local VMs — add it to local.vms`);
      const dir = join(root, setId);
      await mkdir(dir, { recursive: true });
      const disks: DiskSnapshot[] = vm.disks.map((d) => ({ diskId: d.diskId, snapshotId: join(dir, `${d.diskId}.img`), sizeBytes: d.sizeBytes, ...(d.device ? { device: d.device } : {}) }));
      const set = {
        setId,
        vmId: vm.vmId,
        region: vm.region,
        runId,
        state: 'pending' as const,
        createdAt: opts.clock.now().toISOString(),
        disks,
        tags: { ...tags, 'tender:run': runId, 'tender:vm': vm.vmId },
      };
      await writeJson(setFile(setId), set);
      const p = copyAll(set, local).finally(() => inFlight.delete(setId));
      inFlight.set(setId, p);
      return set;
    },

    async getSnapshotSet(setId: string): Promise<SnapshotSet> {
      const set = await readSet(setId);
      if (!set) throw new NotFoundError(`snapshot set ${setId} does not exist (deleted, or made on another machine)`);
      return set;
    },

    async listSnapshotSets(vmId: string): Promise<SnapshotSet[]> {
      let names: string[];
      try {
        names = await readdir(root);
      } catch (e: any) {
        if (e?.code === 'ENOENT') return [];
        throw e;
      }
      const sets = (await Promise.all(names.map((n) => readSet(n)))).filter((s): s is SnapshotSet & { tags: Tags } => !!s && s.vmId === vmId);
      return sets.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    },

    async deleteSnapshotSet(setId: string): Promise<void> {
      const dir = join(root, setId);
      // Mark it gone first so a copy still running does not write set.json back.
      await rm(setFile(setId), { force: true });
      await inFlight.get(setId)?.catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },

    async settle(): Promise<void> {
      await Promise.allSettled([...inFlight.values()]);
    },
  };
}
