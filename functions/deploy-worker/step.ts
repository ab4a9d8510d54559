// One temporary worker per VM, sized by the VM's total disk size and placed in
// the VM's region as the policy says.

import type { StepDeps } from '../step-deps.js';
import { deadlineAfter } from '../step-deps.js';
import { DeployWorkerInput, type DeployWorkerOutput } from './schema.js';
import { PER_VM_STAGES, STEP } from '../../shared/core/pipeline.js';
import { selectWorkerProfile } from '../../shared/core/profiles.js';
import { renderTags, tenderTags } from '../../shared/core/tags.js';

const poll = PER_VM_STAGES.find((s) => s.step === STEP.deployWorker)!.poll!;

export async function runDeployWorker(rawInput: DeployWorkerInput, deps: Pick<StepDeps, 'cloud' | 'clock' | 'logger'>): Promise<DeployWorkerOutput> {
  const { run, vm } = DeployWorkerInput.parse(rawInput);
  const totalDiskBytes = vm.disks.reduce((n, d) => n + d.sizeBytes, 0);
  const profile = selectWorkerProfile({
    provider: run.provider,
    totalDiskBytes,
    overrides: run.worker.profiles,
    region: vm.region,
    placement: run.worker.placement,
  });
  const ctx = { applianceId: run.applianceId, policyId: run.policyId, policyName: run.policy };
  const tags = { ...renderTags(run.worker.tags, ctx), ...tenderTags({ ...ctx, runId: run.runId, vmId: vm.vmId }) };
  const ref = await deps.cloud.workers.deployWorker({
    runId: run.runId,
    vm,
    profile,
    placement: run.worker.placement[vm.region],
    privateNetwork: run.worker.privateNetwork,
    tags,
    repositoryKey: run.repository.key,
  });
  deps.logger.info('worker deployed', { runId: run.runId, vmId: vm.vmId, workerId: ref.workerId, profile: profile.name });
  return {
    workerId: ref.workerId,
    region: ref.region,
    profile: profile.name,
    instanceType: profile.instanceType,
    ready: false,
    deadline: deadlineAfter(deps.clock, poll.timeoutSeconds),
    waitSeconds: poll.pollSeconds,
  };
}
