// After every VM: applies the policy's retention to its restore points (per
// VM, measured from that VM's newest complete point), deletes snapshot sets
// no longer needed — only the newest set a backup succeeded from is kept, as
// the parent of the next incremental — and prunes the repository, so that the
// space of the restore points removed comes back (two-phase: a pack this run
// marks goes at a run at least 24 h later).

import type { StepDeps } from '../step-deps.js';
import { ApplyRetentionInput, type ApplyRetentionOutput } from './schema.js';
import { applyRetentionPolicy } from '../../shared/core/retention.js';

export async function runApplyRetention(rawInput: ApplyRetentionInput, deps: Pick<StepDeps, 'cloud' | 'restorePoints' | 'logger'>): Promise<ApplyRetentionOutput> {
  const { run, vms } = ApplyRetentionInput.parse(rawInput);
  const out: ApplyRetentionOutput = { kept: [], removed: [], snapshotSetsDeleted: [] };
  const points = await deps.restorePoints.list(run.repository, { policy: run.policy });
  const vmIds = new Set(vms.map((v) => v.vmId));
  const byVm = new Map<string, typeof points>();
  for (const p of points) {
    // VMs no longer selected keep their points: dropping a VM from a policy must not erase its history.
    if (!vmIds.has(p.vmId)) continue;
    byVm.set(p.vmId, [...(byVm.get(p.vmId) ?? []), p]);
  }
  for (const [vmId, list] of byVm) {
    const decision = applyRetentionPolicy(list.map((p) => ({ id: p.id, time: p.time })), run.retention);
    out.kept.push(...decision.keep.map((k) => ({ ...k, vmId })));
    out.removed.push(...decision.remove.map((r) => ({ ...r, vmId })));
  }
  if (out.removed.length > 0) await deps.restorePoints.forget(run.repository, out.removed.map((r) => r.id));

  for (const vm of vms) {
    const runs = await deps.cloud.catalog.listRuns({ vmId: vm.vmId });
    const sets = await deps.cloud.snapshots.listSnapshotSets(vm.vmId);
    const createdAt = new Map(sets.map((s) => [s.setId, s.createdAt]));
    // Each policy's newest backed-up set is its next parent: a VM in two policies keeps both.
    const parents = new Map<string, string>();
    for (const r of runs) {
      if (r.outcome !== 'succeeded' || !r.snapshotSetId || !createdAt.has(r.snapshotSetId)) continue;
      const cur = parents.get(r.policy);
      if (!cur || createdAt.get(r.snapshotSetId)! > createdAt.get(cur)!) parents.set(r.policy, r.snapshotSetId);
    }
    const lastGood = parents.get(run.policy);
    if (!lastGood) continue;
    const keepIds = new Set(parents.values());
    const keep = sets.find((s) => s.setId === lastGood)!;
    // Only this policy's sets older than the kept one, and only those whose run has finished
    // (recorded an outcome): with overlapping schedules an older run may still be reading its set.
    const finishedRuns = new Set(runs.map((r) => r.runId));
    for (const s of sets) {
      if (!keepIds.has(s.setId) && s.createdAt < keep.createdAt && s.tags?.['tender:policy'] === run.policy && finishedRuns.has(s.runId)) {
        await deps.cloud.snapshots.deleteSnapshotSet(s.setId);
        out.snapshotSetsDeleted.push(s.setId);
      }
    }
  }
  deps.logger.info('retention applied', { runId: run.runId, kept: out.kept.length, removed: out.removed.length, snapshotSetsDeleted: out.snapshotSetsDeleted.length });

  // Last: a prune that fails (and is retried) has nothing left undone before it.
  if (run.maintenance.prune) {
    const settings = { owner: `run ${run.runId} (policy ${run.policy})`, repackBelow: run.maintenance.repackBelow, maxRepackBytes: run.maintenance.maxRepackMiB * 1024 * 1024 };
    out.maintenance = await deps.restorePoints.prune(run.repository, settings);
    if (out.maintenance.status === 'pruned') deps.logger.info('repository pruned', { runId: run.runId, ...out.maintenance });
    else deps.logger.warn('repository prune skipped', { runId: run.runId, reason: out.maintenance.reason });
  }
  return out;
}
