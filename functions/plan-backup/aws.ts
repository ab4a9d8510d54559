// Lambda entry point of the planBackup step: parse, build deps, call, return.
// A schedule or a manual start names the policy ({ "policyName": "web" });
// the deployed policy is read from its SSM parameter (shared/aws/policy-source.ts).
// A full { policy } is taken as given.

import { awsHandler } from '../aws-deps.js';
import { PlanBackupInput, PlanBackupOutput } from './schema.js';
import { runPlanBackup } from './step.js';
import { awsSettingsFromEnv } from '../../shared/aws/settings.js';
import { createPolicySource } from '../../shared/aws/policy-source.js';
import { defaultClients } from '../../shared/aws/clients.js';

export async function resolvePolicyName(event: unknown, source: Pick<ReturnType<typeof createPolicySource>, 'load'>): Promise<unknown> {
  const e = (event ?? {}) as { policyName?: unknown; policy?: unknown; runId?: unknown };
  if (e.policy !== undefined || typeof e.policyName !== 'string') return event;
  const deployed = await source.load(e.policyName);
  return { ...(e.runId !== undefined ? { runId: e.runId } : {}), applianceId: deployed.applianceId, policy: deployed.policy };
}

let source: ReturnType<typeof createPolicySource> | undefined;

export const handler = awsHandler('planBackup', PlanBackupInput, PlanBackupOutput, runPlanBackup, {
  prepare: (event) => {
    if (!source) {
      const s = awsSettingsFromEnv();
      source = createPolicySource({ ssm: () => defaultClients().ssm(s.region), prefix: s.policyParameterPrefix });
    }
    return resolvePolicyName(event, source);
  },
});
