// Removes the worker and what was made for it. Idempotent in the adapter.

import type { StepDeps } from '../step-deps.js';
import { DeallocateWorkerInput, type DeallocateWorkerOutput } from './schema.js';

export async function runDeallocateWorker(rawInput: DeallocateWorkerInput, deps: Pick<StepDeps, 'cloud' | 'logger'>): Promise<DeallocateWorkerOutput> {
  const { run, vm, worker } = DeallocateWorkerInput.parse(rawInput);
  await deps.cloud.workers.deallocateWorker({
    runId: run.runId,
    vmId: vm.vmId,
    worker: worker ? { workerId: worker.workerId, region: worker.region } : undefined,
  });
  deps.logger.info('worker deallocated', { runId: run.runId, vmId: vm.vmId, workerId: worker?.workerId });
  return { workerId: worker?.workerId, deallocated: true };
}
