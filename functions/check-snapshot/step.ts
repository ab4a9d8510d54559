// Polled until the snapshot set is ready; a set that failed or outlived its
// deadline fails the VM (and sends it to cleanup).

import type { StepDeps } from '../step-deps.js';
import { isPast, nextPollSeconds } from '../step-deps.js';
import { STEP } from '../../shared/core/pipeline.js';
import { CheckSnapshotInput, type CheckSnapshotOutput } from './schema.js';
import { SnapshotFailedError, TimedOutError } from '../../shared/core/errors.js';

export async function runCheckSnapshot(rawInput: CheckSnapshotInput, deps: Pick<StepDeps, 'cloud' | 'clock'>): Promise<CheckSnapshotOutput> {
  const { vm, snapshot } = CheckSnapshotInput.parse(rawInput);
  const set = await deps.cloud.snapshots.getSnapshotSet(snapshot.setId);
  if (set.state === 'failed') {
    throw new SnapshotFailedError(`snapshot set ${set.setId} of VM ${vm.vmId} failed: ${set.failureReason ?? 'no reason given'} — check the VM's disks and run again`);
  }
  if (set.state !== 'ready' && isPast(deps.clock, snapshot.deadline)) {
    throw new TimedOutError(`snapshot set ${set.setId} of VM ${vm.vmId} was still ${set.state} at its deadline ${snapshot.deadline} — check the cloud's snapshot queue and run again`);
  }
  return { ...snapshot, state: set.state, ready: set.state === 'ready', disks: set.disks, waitSeconds: nextPollSeconds(deps.clock, STEP.checkSnapshot, snapshot.deadline) };
}
