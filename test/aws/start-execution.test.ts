// Starting the deployed state machine: `tender backup --policy NAME` for an
// aws policy, and the adapter under it (StartExecution, mocked).

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mockClient } from 'aws-sdk-client-mock';
import { SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { STSClient, GetCallerIdentityCommand } from '@aws-sdk/client-sts';
import { resolveStateMachineArn, startDeployedBackup } from '../../shared/aws/start-execution.js';
import { main } from '../../cli/tender.js';
import { NotFoundError, ValidationError } from '../../shared/core/errors.js';
import { awsError } from './fake-aws.js';

const ARN = 'arn:aws:states:eu-west-1:111122223333:stateMachine:tender-prod-backup';
const sfn = mockClient(SFNClient);
const sts = mockClient(STSClient);
afterEach(() => {
  sfn.reset();
  sts.reset();
});

test('startDeployedBackup: StartExecution with { policyName, runId }, named after the run (so a repeat is the same execution)', async () => {
  sfn.on(StartExecutionCommand).resolves({ executionArn: `${ARN.replace('stateMachine', 'execution')}:r42`, startDate: new Date('2024-05-01T02:00:00Z') });
  const res = await startDeployedBackup({ policyName: 'web', runId: 'r42', stateMachineArn: ARN });
  const call = sfn.commandCalls(StartExecutionCommand)[0]!.args[0].input;
  assert.equal(call.stateMachineArn, ARN);
  assert.equal(call.name, 'r42');
  assert.deepEqual(JSON.parse(call.input!), { policyName: 'web', runId: 'r42' });
  assert.match(res.executionArn, /:execution:tender-prod-backup:r42$/);
});

test('startDeployedBackup: a missing state machine says to deploy; a reused run id with other input is a ValidationError', async () => {
  sfn.on(StartExecutionCommand).rejects(awsError('StateMachineDoesNotExist', 'State Machine Does Not Exist'));
  await assert.rejects(startDeployedBackup({ policyName: 'web', stateMachineArn: ARN }), (e: Error) => e instanceof NotFoundError && /Deploy to AWS/.test(e.message));
  sfn.reset();
  sfn.on(StartExecutionCommand).rejects(awsError('ExecutionAlreadyExists', 'Execution Already Exists'));
  await assert.rejects(startDeployedBackup({ policyName: 'web', runId: 'r1', stateMachineArn: ARN }), ValidationError);
});

test('resolveStateMachineArn: flag, then TENDER_STATE_MACHINE_ARN, then tender-<stage>-backup in this account and Region', async () => {
  sts.on(GetCallerIdentityCommand).resolves({ Account: '111122223333' });
  assert.equal(await resolveStateMachineArn({ explicit: 'arn:x', env: {} }), 'arn:x');
  assert.equal(await resolveStateMachineArn({ env: { TENDER_STATE_MACHINE_ARN: ARN } }), ARN);
  assert.equal(await resolveStateMachineArn({ env: { AWS_REGION: 'eu-west-1', TENDER_STAGE: 'prod' } }), ARN);
});

test('tender backup --policy NAME (aws policy, no --local) starts the deployed state machine and prints the execution', async () => {
  // Prepare
  const dir = mkdtempSync(join(tmpdir(), 'tender-cli-'));
  writeFileSync(
    join(dir, 'tender.config.yaml'),
    'policies:\n  - name: web\n    provider: aws\n    vms: { tags: { backup: web } }\n    repository: { url: "s3://acme-backups/tender", key: { passphraseEnv: X } }\n',
  );
  sfn.on(StartExecutionCommand).resolves({ executionArn: `${ARN.replace('stateMachine', 'execution')}:manual`, startDate: new Date() });
  let out = '';
  // Act
  const code = await main(['backup', '--policy', 'web'], { stdout: (s) => (out += s), stderr: (s) => (out += s), cwd: dir, env: { TENDER_STATE_MACHINE_ARN: ARN } });
  // Assess
  assert.equal(code, 0, out);
  assert.match(out, /Started policy "web"/);
  assert.match(out, /aws stepfunctions describe-execution --execution-arn arn:aws:states:eu-west-1:111122223333:execution:tender-prod-backup:manual/);
  assert.deepEqual(JSON.parse(sfn.commandCalls(StartExecutionCommand)[0]!.args[0].input.input!), { policyName: 'web' });
});
