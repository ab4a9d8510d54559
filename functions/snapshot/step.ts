// Starts the crash-consistent snapshot set of every disk of the VM. The set is
// tagged with the run and VM so cleanup can find it even when this step's
// result never reached the state machine.

import type { StepDeps } from '../step-deps.js';
import { deadlineAfter } from '../step-deps.js';
import { SnapshotInput, type SnapshotOutput } from './schema.js';
import { PER_VM_STAGES, STEP } from '../../shared/core/pipeline.js';
import { tenderTags } from '../../shared/core/tags.js';
import { SnapshotFailedError } from '../../shared/core/errors.js';

const poll = PER_VM_STAGES.find((s) => s.step === STEP.snapshot)!.poll!;

export async function runSnapshot(rawInput: SnapshotInput, deps: Pick<StepDeps, 'cloud' | 'clock' | 'logger'>): Promise<SnapshotOutput> {
  const { run, vm } = SnapshotInput.parse(rawInput);
  const set = await deps.cloud.snapshots.createSnapshotSet({
    runId: run.runId,
    vm,
    tags: { ...run.tags, ...tenderTags({ applianceId: run.applianceId, policyId: run.policyId, policyName: run.policy, runId: run.runId, vmId: vm.vmId }) },
    privateNetwork: run.worker.privateNetwork,
  });
  if (set.state === 'failed') throw new SnapshotFailedError(`snapshot set ${set.setId} of VM ${vm.vmId} failed: ${set.failureReason ?? 'no reason given'} — check the VM's disks and run again`);
  deps.logger.info('snapshot set started', { runId: run.runId, vmId: vm.vmId, setId: set.setId, state: set.state });
  return {
    setId: set.setId,
    state: set.state,
    ready: set.state === 'ready',
    createdAt: set.createdAt,
    disks: set.disks,
    deadline: deadlineAfter(deps.clock, poll.timeoutSeconds),
    waitSeconds: poll.pollSeconds,
  };
}
