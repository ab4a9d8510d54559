// `tender backup --policy NAME` for an aws policy: starts the deployed state
// machine with { policyName, runId? } — the same input a schedule sends — so a
// manual run uses the deployed policy. The execution is named after the run
// id when one is given: StartExecution is idempotent per name and input, so
// running the command twice does not start two runs.

import { SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { STSClient, GetCallerIdentityCommand } from '@aws-sdk/client-sts';
import { ConfigError, NotFoundError, ValidationError } from '../core/errors.js';
import { awsCall, awsErrorName, normaliseAwsError } from './aws-errors.js';
import { partitionOf } from './ec2-workers.js';

export interface StartDeployedBackupOptions {
  policyName: string;
  runId?: string;
  stateMachineArn: string;
  client?: SFNClient;
  now?: () => Date;
}

export interface StartedExecution {
  executionArn: string;
  startDate: string;
  input: { policyName: string; runId?: string };
}

export async function startDeployedBackup(opts: StartDeployedBackupOptions): Promise<StartedExecution> {
  const region = /^arn:[^:]+:states:([^:]+):/.exec(opts.stateMachineArn)?.[1];
  if (!region) throw new ConfigError(`"${opts.stateMachineArn}" is not a Step Functions state machine ARN (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME)`);
  const client = opts.client ?? new SFNClient({ region });
  const input = { policyName: opts.policyName, ...(opts.runId ? { runId: opts.runId } : {}) };
  const stamp = (opts.now ?? (() => new Date()))().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const name = (opts.runId ?? `manual-${opts.policyName}-${stamp}`).replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 80);
  try {
    const res = await client.send(new StartExecutionCommand({ stateMachineArn: opts.stateMachineArn, name, input: JSON.stringify(input) }));
    return { executionArn: res.executionArn!, startDate: (res.startDate ?? new Date()).toISOString(), input };
  } catch (e) {
    const n = awsErrorName(e);
    if (n === 'StateMachineDoesNotExist') {
      throw new NotFoundError(`no state machine ${opts.stateMachineArn} — deploy Tender first (README, "Deploy to AWS"), or pass --state-machine-arn / set TENDER_STATE_MACHINE_ARN`, { cause: e });
    }
    if (n === 'ExecutionAlreadyExists') {
      throw new ValidationError(`an execution named "${name}" already ran with other input — choose another --run-id`, { cause: e });
    }
    throw normaliseAwsError(e, `states:StartExecution ${opts.stateMachineArn}`, 'your credentials need states:StartExecution on the state machine');
  }
}

/** The state machine's ARN: given, from TENDER_STATE_MACHINE_ARN, or `<service>-<stage>-backup` in this account and Region. */
export async function resolveStateMachineArn(opts: { explicit?: string; env: NodeJS.ProcessEnv; sts?: STSClient }): Promise<string> {
  if (opts.explicit) return opts.explicit;
  if (opts.env.TENDER_STATE_MACHINE_ARN) return opts.env.TENDER_STATE_MACHINE_ARN;
  const region = opts.env.AWS_REGION || opts.env.AWS_DEFAULT_REGION;
  if (!region) throw new ConfigError('cannot tell which state machine to start: pass --state-machine-arn, set TENDER_STATE_MACHINE_ARN, or set AWS_REGION (and TENDER_STAGE) to use tender-<stage>-backup');
  const sts = opts.sts ?? new STSClient({ region });
  const id = await awsCall('sts:GetCallerIdentity', () => sts.send(new GetCallerIdentityCommand({})), 'configure AWS credentials (aws configure / AWS_PROFILE)');
  const stage = opts.env.TENDER_STAGE || 'dev';
  return `arn:${partitionOf(region)}:states:${region}:${id.Account}:stateMachine:tender-${stage}-backup`;
}

/** What the CLI runs: start, then print where to watch it. */
export async function startBackupFromCli(opts: {
  policyName: string;
  runId?: string;
  stateMachineArn?: string;
  json?: boolean;
  env: NodeJS.ProcessEnv;
  stdout: (s: string) => void;
  client?: SFNClient;
  sts?: STSClient;
}): Promise<number> {
  const arn = await resolveStateMachineArn({ explicit: opts.stateMachineArn, env: opts.env, sts: opts.sts });
  const started = await startDeployedBackup({ policyName: opts.policyName, runId: opts.runId, stateMachineArn: arn, client: opts.client });
  if (opts.json) opts.stdout(JSON.stringify({ stateMachineArn: arn, ...started }, null, 2) + '\n');
  else {
    const region = arn.split(':')[3];
    opts.stdout(
      `Started policy "${opts.policyName}" on ${arn}\n  execution ${started.executionArn}\n` +
        `  watch it: aws stepfunctions describe-execution --execution-arn ${started.executionArn}\n` +
        `  or https://${region}.console.aws.amazon.com/states/home?region=${region}#/v2/executions/details/${started.executionArn}\n`,
    );
  }
  return 0;
}
