// Once per run: who is backed up, with which settings. Changes nothing in the
// world, so it needs no compensation.

import { randomBytes } from 'node:crypto';
import type { StepDeps } from '../step-deps.js';
import { PlanBackupInput, type PlanBackupOutput } from './schema.js';
import { policyIdOf } from '../../shared/core/tags.js';

export function newRunId(now: Date): string {
  return `r${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;
}

export async function runPlanBackup(rawInput: PlanBackupInput, deps: Pick<StepDeps, 'cloud' | 'clock' | 'logger'>): Promise<PlanBackupOutput> {
  const input = PlanBackupInput.parse(rawInput);
  const { policy } = input;
  const now = deps.clock.now();
  const runId = input.runId ?? newRunId(now);
  const policyId = policyIdOf(input.applianceId, policy.name);
  const vms = await deps.cloud.snapshots.findVms({ ids: policy.vms.ids, tags: policy.vms.tags });
  // A VM matched both by id and by tag is backed up once.
  const unique = [...new Map(vms.map((v) => [v.vmId, v])).values()];
  deps.logger.info('planned backup', { runId, policy: policy.name, vms: unique.map((v) => v.vmId) });
  return {
    run: {
      runId,
      applianceId: input.applianceId,
      policy: policy.name,
      policyId,
      provider: policy.provider,
      startedAt: now.toISOString(),
      repository: policy.repository,
      retention: policy.retention,
      maintenance: policy.maintenance,
      worker: policy.worker,
      tags: { policy: policy.name, schedule: policy.schedule },
    },
    maxConcurrency: policy.maxConcurrency,
    vms: unique,
  };
}
