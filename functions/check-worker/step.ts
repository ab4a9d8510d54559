// Polled until the worker is up; a worker that failed, vanished or never came
// up before its deadline fails the VM.

import type { StepDeps } from '../step-deps.js';
import { isPast, nextPollSeconds } from '../step-deps.js';
import { STEP } from '../../shared/core/pipeline.js';
import { CheckWorkerInput, type CheckWorkerOutput } from './schema.js';
import { TimedOutError, WorkerFailedError } from '../../shared/core/errors.js';

export async function runCheckWorker(rawInput: CheckWorkerInput, deps: Pick<StepDeps, 'cloud' | 'clock'>): Promise<CheckWorkerOutput> {
  const { vm, worker } = CheckWorkerInput.parse(rawInput);
  const state = await deps.cloud.workers.getWorkerState({ workerId: worker.workerId, region: worker.region });
  if (state === 'failed' || state === 'gone') {
    throw new WorkerFailedError(`worker ${worker.workerId} for VM ${vm.vmId} is ${state} before it was ready — check the worker's quota and placement and run again`);
  }
  if (state !== 'ready' && isPast(deps.clock, worker.deadline)) {
    throw new TimedOutError(`worker ${worker.workerId} for VM ${vm.vmId} was not ready by ${worker.deadline} — check its subnet and image and run again`);
  }
  return { ...worker, ready: state === 'ready', waitSeconds: nextPollSeconds(deps.clock, STEP.checkWorker, worker.deadline) };
}
