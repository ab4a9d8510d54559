// Polled until the worker reports its result. The worker's own failure is
// reported under WorkerFailedError (not retried: polling again cannot undo
// it) with the worker's error name in the message.

import type { StepDeps } from '../step-deps.js';
import { isPast, nextPollSeconds } from '../step-deps.js';
import { STEP } from '../../shared/core/pipeline.js';
import { CheckBackupInput, type CheckBackupOutput } from './schema.js';
import { TimedOutError, WorkerFailedError } from '../../shared/core/errors.js';

export async function runCheckBackup(rawInput: CheckBackupInput, deps: Pick<StepDeps, 'cloud' | 'clock'>): Promise<CheckBackupOutput> {
  const { vm, worker, job } = CheckBackupInput.parse(rawInput);
  const status = await deps.cloud.channel.getJobStatus({ workerId: worker.workerId, region: worker.region }, job.jobId);
  if (status.state === 'failed') {
    throw new WorkerFailedError(`backup of VM ${vm.vmId} failed on worker ${worker.workerId}: ${status.error.name}: ${status.error.message}`);
  }
  if (status.state === 'succeeded') {
    const { progress: _drop, ...rest } = job;
    const bytesTotal = status.result.disks.reduce((n, d) => n + d.sizeBytes, 0);
    return { ...rest, done: true, result: status.result, progress: { bytesDone: bytesTotal, bytesTotal, bytesPerSecond: job.progress?.bytesPerSecond ?? 0 } };
  }
  if (isPast(deps.clock, job.deadline)) {
    throw new TimedOutError(`backup of VM ${vm.vmId} on worker ${worker.workerId} did not finish by ${job.deadline} — check the worker's throughput and run again`);
  }
  return { ...job, done: false, ...(status.progress ? { progress: status.progress } : {}), waitSeconds: nextPollSeconds(deps.clock, STEP.checkBackup, job.deadline) };
}
