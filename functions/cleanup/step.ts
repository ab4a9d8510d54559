// The compensation path. Whatever failed: revoke every grant, remove the
// worker, delete the run's snapshot set unless a restore point was made from
// it (it is then the next run's parent), and record the failure with its step
// and reason. Every action is idempotent and every one is attempted even when
// another fails; if any failed, the step throws TransientError so the state
// machine runs the whole cleanup again.

import type { StepDeps } from '../step-deps.js';
import { CleanupInput, type CleanupOutput } from './schema.js';
import { TransientError, toError } from '../../shared/core/errors.js';

/**
 * The Cause of a caught error: Lambda puts a JSON document there
 * ({ errorType, errorMessage, trace }), the local runner the message itself.
 */
export function describeCaught(error: { Error: string; Cause?: unknown }): { name: string; message: string } {
  const cause = error.Cause;
  if (typeof cause === 'string') {
    try {
      const parsed = JSON.parse(cause) as { errorMessage?: unknown; errorType?: unknown };
      if (parsed && typeof parsed.errorMessage === 'string') return { name: error.Error, message: parsed.errorMessage };
    } catch {
      // not JSON: the message itself
    }
    return { name: error.Error, message: cause };
  }
  if (cause && typeof cause === 'object' && typeof (cause as any).errorMessage === 'string') return { name: error.Error, message: (cause as any).errorMessage };
  return { name: error.Error, message: cause === undefined ? '(no cause given)' : JSON.stringify(cause) };
}

export async function runCleanup(rawInput: CleanupInput, deps: Pick<StepDeps, 'cloud' | 'clock' | 'logger'>): Promise<CleanupOutput> {
  const input = CleanupInput.parse(rawInput);
  const { run, vm, snapshot, worker, job, failedStep } = input;
  const caught = describeCaught(input.error);
  const log = deps.logger.child({ runId: run.runId, vmId: vm.vmId });
  const problems: string[] = [];
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (e) {
      const err = toError(e);
      problems.push(`${what}: ${err.name}: ${err.message}`);
      log.error('cleanup action failed', { action: what, error: err.message });
      return undefined;
    }
  };

  const revoked = (await attempt('revoke access', () => deps.cloud.access.revokeAccess({ runId: run.runId, vmId: vm.vmId })))?.revoked ?? [];
  const removed = await attempt('deallocate worker', async () => {
    await deps.cloud.workers.deallocateWorker({ runId: run.runId, vmId: vm.vmId, worker: worker ? { workerId: worker.workerId, region: worker.region } : undefined });
    return true;
  });

  // The snapshot step may have made a set whose id never reached the state
  // machine: find the run's sets of this VM by their tags too.
  const restorePointId = job?.result?.restorePointId;
  let snapshotSetDeleted: string | undefined;
  let snapshotSetKept: string | undefined;
  const setIds = new Set<string>(snapshot ? [snapshot.setId] : []);
  await attempt('find snapshot sets', async () => {
    for (const s of await deps.cloud.snapshots.listSnapshotSets(vm.vmId)) if (s.runId === run.runId) setIds.add(s.setId);
  });
  for (const setId of setIds) {
    if (restorePointId) {
      snapshotSetKept = setId;
      continue;
    }
    const ok = await attempt(`delete snapshot set ${setId}`, async () => {
      await deps.cloud.snapshots.deleteSnapshotSet(setId);
      return true;
    });
    if (ok) snapshotSetDeleted = setId;
  }

  await attempt('record failure', () =>
    deps.cloud.catalog.recordRun({
      runId: run.runId,
      policy: run.policy,
      vmId: vm.vmId,
      outcome: 'failed',
      step: failedStep,
      error: caught,
      ...(restorePointId ? { restorePointId, snapshotSetId: snapshotSetKept } : {}),
      finishedAt: deps.clock.now().toISOString(),
    }),
  );

  if (problems.length > 0) {
    throw new TransientError(`cleanup of VM ${vm.vmId} after ${failedStep} failed is incomplete (${problems.join('; ')}) — it is retried; if it keeps failing, remove the run's worker and snapshots by their tender:run=${run.runId} tag`);
  }
  log.warn('VM failed; cleaned up', { step: failedStep, error: caught.name });
  return {
    vmId: vm.vmId,
    vmName: vm.name,
    outcome: 'failed',
    step: failedStep,
    error: caught,
    ...(restorePointId ? { restorePointId } : {}),
    ...(snapshotSetKept ? { snapshotSetId: snapshotSetKept } : {}),
    cleanup: { revoked, workerRemoved: removed === true, snapshotSetDeleted, snapshotSetKept, problems },
  };
}
