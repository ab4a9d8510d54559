// Lambda entry point of the planBackup step: parse, build deps, call, return.
// A schedule or a manual start names the policy ({ "policyName": "web" });
// the deployed policy is read from its SSM parameter (shared/aws/policy-source.ts).
// Nothing else is accepted: a policy given in full by whoever may start an
// execution could send workers to a public subnet or a repository of its choosing.

import { awsHandler } from '../aws-deps.js';
import { PlanBackupInput, PlanBackupOutput } from './schema.js';
import { runPlanBackup } from './step.js';
import { awsSettingsFromEnv } from '../../shared/aws/settings.js';
import { createPolicySource } from '../../shared/aws/policy-source.js';
import { defaultClients } from '../../shared/aws/clients.js';
import { ValidationError } from '../../shared/core/errors.js';

export async function resolvePolicyName(event: unknown, source: Pick<ReturnType<typeof createPolicySource>, 'load'>): Promise<unknown> {
  const e = (event ?? {}) as { policyName?: unknown; policy?: unknown; runId?: unknown };
  if (e.policy !== undefined) {
    throw new ValidationError('the deployed pipeline runs only deployed policies: start it with {"policyName": "<name>"} — to change a policy, edit tender.config.yaml and deploy again');
  }
  if (typeof e.policyName !== 'string') throw new ValidationError('the input must be {"policyName": "<name>", "runId"?: "<id>"} (what the schedule and `tender backup` send)');
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
