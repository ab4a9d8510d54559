// Ends every URL, SAS and credential made for this VM in this run, before the
// worker goes: a URL must not outlive the job it was made for.

import type { StepDeps } from '../step-deps.js';
import { RevokeAccessInput, type RevokeAccessOutput } from './schema.js';

export async function runRevokeAccess(rawInput: RevokeAccessInput, deps: Pick<StepDeps, 'cloud' | 'logger'>): Promise<RevokeAccessOutput> {
  const { run, vm } = RevokeAccessInput.parse(rawInput);
  const res = await deps.cloud.access.revokeAccess({ runId: run.runId, vmId: vm.vmId });
  deps.logger.info('access revoked', { runId: run.runId, vmId: vm.vmId, revoked: res.revoked.length });
  return { revoked: res.revoked };
}
