// Writes the VM's success to the catalog (the next run finds its parent
// snapshot set there) and shapes the VM's line of the execution output.

import type { StepDeps } from '../step-deps.js';
import { RecordOutcomeInput, type RecordOutcomeOutput } from './schema.js';
import { ValidationError } from '../../shared/core/errors.js';

export async function runRecordOutcome(rawInput: RecordOutcomeInput, deps: Pick<StepDeps, 'cloud' | 'clock'>): Promise<RecordOutcomeOutput> {
  const { run, vm, snapshot, job } = RecordOutcomeInput.parse(rawInput);
  if (!job.result) throw new ValidationError(`recordOutcome for VM ${vm.vmId} got a job without a result — the state machine must only reach it after checkBackup reported done`);
  const result = job.result;
  await deps.cloud.catalog.recordRun({
    runId: run.runId,
    policy: run.policy,
    vmId: vm.vmId,
    outcome: 'succeeded',
    restorePointId: result.restorePointId,
    snapshotSetId: snapshot.setId,
    finishedAt: deps.clock.now().toISOString(),
  });
  return {
    vmId: vm.vmId,
    vmName: vm.name,
    outcome: 'succeeded',
    restorePointId: result.restorePointId,
    snapshotSetId: snapshot.setId,
    // Incremental only when a parent was handed over and every disk was diffed against it.
    incremental: job.parentSnapshotSetId !== undefined && result.disks.every((d) => d.incremental),
    bytesTotal: result.disks.reduce((n, d) => n + d.sizeBytes, 0),
    bytesRead: result.disks.reduce((n, d) => n + d.bytesRead, 0),
    bytesStored: result.disks.reduce((n, d) => n + d.bytesStored, 0),
    seconds: result.seconds,
  };
}
