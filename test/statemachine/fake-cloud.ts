// In-memory CloudPorts for step and state-machine tests: every port keeps
// what a user would notice (live workers, live grants, snapshot sets, run
// records) so tests assert on the world, not on calls.

import type { CloudPorts, JobStatus, RunRecord, SnapshotSet, Vm, WorkerJob } from '../../shared/ports/cloud.js';
import type { PruneSettings, RestorePointInfo, RestorePoints } from '../../shared/ports/restore-points.js';
import { NotFoundError } from '../../shared/core/errors.js';

export interface FakeWorld {
  vms: Vm[];
  sets: Map<string, SnapshotSet>;
  workers: Map<string, { state: 'starting' | 'ready' | 'failed' | 'gone'; runId: string; vmId: string; installed: boolean; profile: string; tags: Record<string, string> }>;
  grants: Array<{ runId: string; vmId: string; what: string; live: boolean }>;
  jobs: Map<string, { job: WorkerJob; polls: number }>;
  runs: RunRecord[];
  points: RestorePointInfo[];
  forgotten: string[];
  prunes: PruneSettings[];
  /** Polls before a snapshot / worker / job is ready or done. */
  pendingPolls: number;
}

export function fakeVm(id: string, diskGiB = [8]): Vm {
  return { vmId: id, name: id.replace(/^vm-/, ''), region: 'local', tags: { env: 'test' }, disks: diskGiB.map((g, i) => ({ diskId: `d${i}`, sizeBytes: g * 1024 ** 3 })) };
}

export function createFakeCloud(vms: Vm[], opts: { pendingPolls?: number } = {}): { cloud: CloudPorts; restorePoints: RestorePoints; world: FakeWorld } {
  const world: FakeWorld = { vms, sets: new Map(), workers: new Map(), grants: [], jobs: new Map(), runs: [], points: [], forgotten: [], prunes: [], pendingPolls: opts.pendingPolls ?? 1 };
  const setPolls = new Map<string, number>();
  const workerPolls = new Map<string, number>();
  let seq = 0;
  const cloud: CloudPorts = {
    snapshots: {
      async findVms(sel) {
        const out: Vm[] = [];
        for (const id of sel.ids ?? []) {
          const v = vms.find((x) => x.vmId === id);
          if (!v) throw new NotFoundError(`no VM ${id}`);
          out.push(v);
        }
        for (const v of vms) if (sel.tags && Object.keys(sel.tags).length && Object.entries(sel.tags).every(([k, val]) => v.tags[k] === val)) out.push(v);
        return out;
      },
      async createSnapshotSet({ runId, vm, tags }) {
        const setId = `ss-${runId}-${vm.vmId}`;
        const existing = world.sets.get(setId);
        if (existing) return existing;
        const set: SnapshotSet = {
          setId,
          vmId: vm.vmId,
          region: vm.region,
          runId,
          state: world.pendingPolls > 0 ? 'pending' : 'ready',
          createdAt: new Date(Date.UTC(2024, 0, 1, 0, 0, ++seq)).toISOString(),
          disks: vm.disks.map((d) => ({ diskId: d.diskId, snapshotId: `snap-${setId}-${d.diskId}`, sizeBytes: d.sizeBytes })),
          tags,
        };
        world.sets.set(setId, set);
        return set;
      },
      async getSnapshotSet(setId) {
        const s = world.sets.get(setId);
        if (!s) throw new NotFoundError(`no set ${setId}`);
        const n = (setPolls.get(setId) ?? 0) + 1;
        setPolls.set(setId, n);
        if (s.state === 'pending' && n >= world.pendingPolls) s.state = 'ready';
        return { ...s };
      },
      async listSnapshotSets(vmId) {
        return [...world.sets.values()].filter((s) => s.vmId === vmId).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
      },
      async deleteSnapshotSet(setId) {
        world.sets.delete(setId);
      },
    },
    workers: {
      async deployWorker(req) {
        const id = `w-${req.runId}-${req.vm.vmId}`;
        if (!world.workers.has(id) || world.workers.get(id)!.state === 'gone') {
          world.workers.set(id, { state: world.pendingPolls > 0 ? 'starting' : 'ready', runId: req.runId, vmId: req.vm.vmId, installed: false, profile: req.profile.name, tags: req.tags });
        }
        return { workerId: id, region: 'local' };
      },
      async getWorkerState(ref) {
        const w = world.workers.get(ref.workerId);
        if (!w) return 'gone';
        const n = (workerPolls.get(ref.workerId) ?? 0) + 1;
        workerPolls.set(ref.workerId, n);
        if (w.state === 'starting' && n >= world.pendingPolls) w.state = 'ready';
        return w.state;
      },
      async installWorker(req) {
        const w = world.workers.get(req.worker.workerId)!;
        w.installed = true;
        world.grants.push({ runId: req.runId, vmId: req.vmId, what: 'bundle-url', live: true });
        return { bundleSha256: 'a'.repeat(64) };
      },
      async deallocateWorker(req) {
        const id = req.worker?.workerId ?? `w-${req.runId}-${req.vmId}`;
        const w = world.workers.get(id);
        if (w) w.state = 'gone';
      },
    },
    channel: {
      async startJob(_ref, job) {
        if (!world.jobs.has(job.jobId)) world.jobs.set(job.jobId, { job, polls: 0 });
        world.grants.push({ runId: job.runId, vmId: job.vm.vmId, what: 'job-credential', live: true });
      },
      async getJobStatus(_ref, jobId): Promise<JobStatus> {
        const j = world.jobs.get(jobId)!;
        j.polls++;
        if (j.polls <= world.pendingPolls) return { state: 'running', progress: { bytesDone: 1, bytesTotal: 2, bytesPerSecond: 1 }, updatedAt: '' };
        const rp = `rp-${j.job.runId}-${j.job.vm.vmId}`;
        if (!world.points.some((p) => p.id === rp)) {
          world.points.push({ id: rp, vmId: j.job.vm.vmId, vmName: j.job.vm.name, policy: j.job.policy, runId: j.job.runId, time: new Date(Date.UTC(2024, 0, 1, 0, 0, ++seq)).toISOString(), disks: [], tags: {} });
        }
        return {
          state: 'succeeded',
          result: {
            restorePointId: rp,
            seconds: 1,
            disks: j.job.disks.map((d) => ({ diskId: d.diskId, sizeBytes: d.sizeBytes, blocksRead: 1, bytesRead: d.parentSnapshotId ? 10 : d.sizeBytes, blocksNew: 1, bytesStored: 5, incremental: !!d.parentSnapshotId })),
          },
          updatedAt: '',
        };
      },
    },
    access: {
      async revokeAccess({ runId, vmId }) {
        const revoked: string[] = [];
        for (const g of world.grants) if (g.runId === runId && g.vmId === vmId && g.live) ((g.live = false), revoked.push(g.what));
        return { revoked };
      },
    },
    catalog: {
      async recordRun(r) {
        const i = world.runs.findIndex((x) => x.runId === r.runId && x.vmId === r.vmId);
        if (i >= 0) world.runs[i] = r;
        else world.runs.push(r);
      },
      async listRuns(f = {}) {
        return world.runs.filter((r) => (!f.policy || r.policy === f.policy) && (!f.vmId || r.vmId === f.vmId));
      },
    },
  };
  const restorePoints: RestorePoints = {
    async list(_repo, f = {}) {
      return world.points.filter((p) => (!f.policy || p.policy === f.policy) && (!f.vmId || p.vmId === f.vmId));
    },
    async forget(_repo, ids) {
      world.forgotten.push(...ids);
      world.points = world.points.filter((p) => !ids.includes(p.id));
    },
    async prune(_repo, settings) {
      world.prunes.push(settings);
      return { status: 'pruned', packsDeleted: 0, bytesFreed: 0, packsMarked: 0, packsRepacked: 0, bytesRepacked: 0, packsLeftForLater: 0, packsNotRepacked: 0 };
    },
  };
  return { cloud, restorePoints, world };
}

export const testPolicy = {
  name: 'web',
  provider: 'local' as const,
  vms: { tags: { env: 'test' } },
  repository: { url: 'file:/tmp/unused', key: { passphraseEnv: 'X' } },
  retention: { last: 0, daily: 1, weekly: 0, monthly: 0, yearly: 0 },
  worker: { tags: { Name: 'tender-%policyName%' } },
};
