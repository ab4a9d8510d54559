// Hands the worker its job: this VM's snapshot set, the parent set to diff
// against (the last one this policy backed up successfully), and where the
// repository is. The job id is derived from run and VM, so a re-invoked step
// hands over the same job rather than a second one.

import type { StepDeps } from '../step-deps.js';
import { deadlineAfter } from '../step-deps.js';
import { StartBackupInput, type StartBackupOutput } from './schema.js';
import { PER_VM_STAGES, STEP } from '../../shared/core/pipeline.js';
import { NotFoundError, toError } from '../../shared/core/errors.js';
import type { JobDisk, SnapshotSet, WorkerJob } from '../../shared/ports/cloud.js';

const poll = PER_VM_STAGES.find((s) => s.step === STEP.startBackup)!.poll!;

export function jobIdOf(runId: string, vmId: string): string {
  return `job-${runId}-${vmId}`.replace(/[^A-Za-z0-9_.-]/g, '-');
}

/** The newest snapshot set this policy backed this VM up from, if it still exists. */
async function findParent(
  deps: Pick<StepDeps, 'cloud'>,
  policy: string,
  vmId: string,
  currentSetId: string,
): Promise<{ set?: SnapshotSet; note?: string }> {
  const runs = await deps.cloud.catalog.listRuns({ policy, vmId });
  const last = runs
    .filter((r) => r.outcome === 'succeeded' && r.snapshotSetId && r.snapshotSetId !== currentSetId)
    // Records are oldest first; among equal times the later record is the later run.
    .reduce<(typeof runs)[number] | undefined>((best, r) => (!best || r.finishedAt >= best.finishedAt ? r : best), undefined);
  if (!last) return { note: 'no earlier backup of this VM by this policy: full read' };
  try {
    const set = await deps.cloud.snapshots.getSnapshotSet(last.snapshotSetId!);
    if (set.state !== 'ready') return { note: `parent snapshot set ${set.setId} is ${set.state}: full read` };
    return { set };
  } catch (e) {
    if (toError(e).name === NotFoundError.name) return { note: `parent snapshot set ${last.snapshotSetId} no longer exists: full read` };
    throw e;
  }
}

export async function runStartBackup(rawInput: StartBackupInput, deps: Pick<StepDeps, 'cloud' | 'clock' | 'logger'>): Promise<StartBackupOutput> {
  const { run, vm, snapshot, worker } = StartBackupInput.parse(rawInput);
  const parent = await findParent(deps, run.policy, vm.vmId, snapshot.setId);
  const disks: JobDisk[] = snapshot.disks.map((d) => {
    const p = parent.set?.disks.find((x) => x.diskId === d.diskId);
    return p ? { ...d, parentSnapshotId: p.snapshotId } : { ...d };
  });
  const job: WorkerJob = {
    jobId: jobIdOf(run.runId, vm.vmId),
    runId: run.runId,
    policy: run.policy,
    vm: { vmId: vm.vmId, name: vm.name, tags: vm.tags },
    snapshotSetId: snapshot.setId,
    parentSnapshotSetId: parent.set?.setId,
    disks,
    repository: run.repository,
    tags: run.tags,
  };
  await deps.cloud.channel.startJob({ workerId: worker.workerId, region: worker.region }, job);
  deps.logger.info('backup job started', { runId: run.runId, vmId: vm.vmId, jobId: job.jobId, parent: parent.set?.setId ?? parent.note });
  return {
    jobId: job.jobId,
    ...(parent.set ? { parentSnapshotSetId: parent.set.setId } : { parentNote: parent.note }),
    done: false,
    deadline: deadlineAfter(deps.clock, poll.timeoutSeconds),
    waitSeconds: poll.pollSeconds,
  };
}
