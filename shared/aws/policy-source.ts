// Policies as deployed: serverless.yml writes each policy of the config file
// into an SSM parameter (<prefix><name>, JSON { applianceId, policy }), so a
// schedule or `aws stepfunctions start-execution --input '{"policyName":"web"}'`
// names a policy instead of carrying it, and runs always use what was deployed.

import { GetParameterCommand, type SSMClient } from '@aws-sdk/client-ssm';
import { PolicySchema, type Policy } from '../core/config.js';
import { ConfigError, NotFoundError } from '../core/errors.js';
import { awsCall, isAwsNotFound } from './aws-errors.js';

export interface DeployedPolicy {
  applianceId: string;
  policy: Policy;
}

export function createPolicySource(opts: { ssm: () => SSMClient; prefix: string }) {
  return {
    async load(name: string): Promise<DeployedPolicy> {
      const param = `${opts.prefix}${name}`;
      let value: string | undefined;
      try {
        value = (await opts.ssm().send(new GetParameterCommand({ Name: param }))).Parameter?.Value;
      } catch (e) {
        if (isAwsNotFound(e)) throw new NotFoundError(`no deployed policy "${name}" (SSM parameter ${param}) — add it to the config file and deploy again`, { cause: e });
        return awsCall(`ssm:GetParameter ${param}`, () => Promise.reject(e), `the plan-backup role needs ssm:GetParameter on ${param}`);
      }
      let raw: { applianceId?: unknown; policy?: unknown };
      try {
        raw = JSON.parse(value ?? '');
      } catch {
        throw new ConfigError(`SSM parameter ${param} does not hold JSON — deploy again`);
      }
      const res = PolicySchema.safeParse(raw.policy);
      if (!res.success) throw new ConfigError(`the deployed policy "${name}" (${param}) is not valid: ${res.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')} — deploy again`);
      return { applianceId: typeof raw.applianceId === 'string' ? raw.applianceId : 'tender', policy: res.data };
    },
  };
}
