// The worker fetches its bundle through a short-lived URL and checks its
// digest before running it; the adapter stages the bundle and the URL.

import type { StepDeps } from '../step-deps.js';
import { InstallWorkerInput, type InstallWorkerOutput } from './schema.js';

export async function runInstallWorker(rawInput: InstallWorkerInput, deps: Pick<StepDeps, 'cloud' | 'logger'>): Promise<InstallWorkerOutput> {
  const { run, vm, worker } = InstallWorkerInput.parse(rawInput);
  const res = await deps.cloud.workers.installWorker({ runId: run.runId, vmId: vm.vmId, worker: { workerId: worker.workerId, region: worker.region } });
  deps.logger.info('worker installed', { runId: run.runId, vmId: vm.vmId, workerId: worker.workerId, bundleSha256: res.bundleSha256 });
  return { bundleSha256: res.bundleSha256 };
}
