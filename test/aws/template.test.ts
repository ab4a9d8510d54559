// The CloudFormation template `osls package` writes, offline and without
// credentials, from serverless.yml and a config file: the state machine, one
// schedule per policy, workers without public IPs and with IMDSv2, destructive
// actions conditioned on Tender's tags, no wildcard actions on anything that
// writes, and a worker role that can neither delete nor change retention.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CONFIG = fileURLToPath(new URL('./fixtures/tender.config.yaml', import.meta.url));

let tpl: any;
let out: string;
let R: Record<string, any>;

function packageOffline(dir: string, env: Record<string, string>) {
  return spawnSync(process.execPath, [join(ROOT, 'node_modules/osls/bin/serverless.js'), 'package', '--stage', 'ci', '--region', 'eu-west-1', '--package', dir], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 240_000,
    env: {
      PATH: process.env.PATH!,
      HOME: process.env.HOME ?? tmpdir(),
      // Offline, no real credentials: packaging must not need any.
      AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
      AWS_EC2_METADATA_DISABLED: 'true',
      SLS_TELEMETRY_DISABLED: '1',
      SLS_NOTIFICATIONS_MODE: 'off',
      ...env,
    },
  });
}

before(() => {
  out = mkdtempSync(join(tmpdir(), 'tender-sls-'));
  const res = packageOffline(out, { TENDER_CONFIG: CONFIG, TENDER_REPOSITORY_BUCKET: 'acme-backups', TENDER_REPOSITORY_OBJECT_LOCK_DAYS: '30', TENDER_REPOSITORY_KMS: 'true' });
  assert.equal(res.status, 0, `osls package failed:\n${res.stdout}\n${res.stderr}`);
  tpl = JSON.parse(readFileSync(join(out, 'cloudformation-template-update-stack.json'), 'utf8'));
  R = tpl.Resources;
});

const ofType = (type: string) => Object.entries(R).filter(([, r]) => r.Type === type);
const statements = (role: any): any[] => role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
const actions = (s: any): string[] => [s.Action].flat();
const allRoles = () => ofType('AWS::IAM::Role');
const READ_ONLY = /^(ec2:Describe|ssm:(Get|List|Describe)|s3:(GetObject|ListBucket)$|sqs:(ReceiveMessage|GetQueueUrl)$|logs:|kms:Decrypt$|secretsmanager:GetSecretValue$|states:Describe|ec2messages:|ssmmessages:)/;

test('template: the state machine from statemachines/backup.asl.json, its Lambdas resolved, one function per step on nodejs22.x', () => {
  const [[, sm]] = ofType('AWS::StepFunctions::StateMachine') as any;
  const def = JSON.stringify(sm.Properties.DefinitionString);
  for (const step of ['planBackup', 'snapshot', 'checkSnapshot', 'deployWorker', 'checkWorker', 'installWorker', 'startBackup', 'checkBackup', 'revokeAccess', 'deallocateWorker', 'recordOutcome', 'cleanup', 'applyRetention']) {
    assert.ok(def.includes(`function:tender-ci-${step}`), `${step} in the definition`);
    const fn = Object.values(R).find((r: any) => r.Type === 'AWS::Lambda::Function' && r.Properties.FunctionName === `tender-ci-${step}`) as any;
    assert.ok(fn, `function ${step}`);
    assert.equal(fn.Properties.Runtime, 'nodejs22.x');
    assert.ok(fn.Properties.Role['Fn::GetAtt'][0].endsWith('Role'), `${step} has its own role`);
  }
  assert.ok(!def.includes('${self:'), 'serverless variables resolved');
  assert.equal(sm.Properties.StateMachineName, 'tender-ci-backup');
});

test('template: one EventBridge schedule per AWS policy (cron in EventBridge form, disabled policies disabled), naming the policy', () => {
  const rules = ofType('AWS::Events::Rule').map(([, r]) => r.Properties);
  assert.equal(rules.length, 2, 'the local policy gets none');
  const byInput = Object.fromEntries(rules.map((r: any) => [JSON.parse(r.Targets[0].Input).policyName, r]));
  assert.equal(byInput.web.ScheduleExpression, 'cron(0 2 * * ? *)');
  assert.equal(byInput.web.State, 'ENABLED');
  assert.equal(byInput.db.ScheduleExpression, 'cron(30 1 ? * 2-6 *)');
  assert.equal(byInput.db.State, 'DISABLED');
  for (const r of rules) assert.deepEqual(r.Targets[0].Arn, { Ref: 'BackupStateMachine' });
  const params = ofType('AWS::SSM::Parameter').map(([, p]) => p.Properties);
  assert.deepEqual(params.map((p) => p.Name).sort(), ['/tender-ci/policies/db', '/tender-ci/policies/web']);
  assert.equal(JSON.parse(params.find((p) => p.Name.endsWith('/web')).Value).policy.repository.url, 's3://acme-backups/tender');
});

test('template: workers launch without a public IP and only with IMDSv2 (the deploy role cannot do otherwise)', () => {
  const st = statements(R.DeployWorkerRole).filter((s) => actions(s).includes('ec2:RunInstances'));
  const eni = st.find((s) => JSON.stringify(s.Resource).includes('network-interface'));
  assert.deepEqual(eni.Condition.Bool, { 'ec2:AssociatePublicIpAddress': 'false' });
  const inst = st.find((s) => JSON.stringify(s.Resource).includes(':instance/'));
  assert.equal(inst.Condition.StringEquals['ec2:MetadataHttpTokens'], 'required');
  assert.equal(inst.Condition.StringEquals['aws:RequestTag/tender:role'], 'worker');
  // Subnets and security groups: only the policies' placements.
  const net = st.find((s) => JSON.stringify(s.Resource).includes(':subnet/'));
  assert.match(JSON.stringify(net.Resource), /subnet\/subnet-0abc/);
  assert.doesNotMatch(JSON.stringify(net.Resource), /subnet\/\*/);
  const pass = statements(R.DeployWorkerRole).find((s) => actions(s).includes('iam:PassRole'));
  assert.deepEqual(pass.Resource, { 'Fn::GetAtt': ['WorkerRole', 'Arn'] });
  assert.equal(pass.Condition.StringEquals['iam:PassedToService'], 'ec2.amazonaws.com');
});

test('template: TerminateInstances and DeleteSnapshot only on resources carrying Tender\'s tags, wherever they are granted', () => {
  let seen = 0;
  for (const [name, role] of allRoles()) {
    for (const s of statements(role)) {
      if (s.Effect !== 'Allow') continue;
      for (const a of actions(s)) {
        if (a === 'ec2:TerminateInstances') {
          seen++;
          assert.equal(s.Condition?.StringEquals?.['aws:ResourceTag/tender:role'], 'worker', `${name}: terminate only workers`);
          assert.equal(s.Condition?.StringEquals?.['aws:ResourceTag/tender:appliance'], 'acme', name);
        }
        if (a === 'ec2:DeleteSnapshot' || a === 'ec2:DeleteTags') {
          seen++;
          assert.equal(s.Condition?.StringEquals?.['aws:ResourceTag/tender:appliance'], 'acme', `${name}: ${a} only on Tender's snapshots`);
        }
        if (a === 'ssm:SendCommand' && JSON.stringify(s.Resource).includes(':instance/')) {
          assert.equal(s.Condition?.StringEquals?.['ssm:resourceTag/tender:role'], 'worker', `${name}: commands only to workers`);
        }
      }
    }
  }
  assert.ok(seen >= 4);
});

test('template: no Allow has a wildcard action, and nothing that writes is allowed on every resource', () => {
  for (const [name, role] of allRoles()) {
    for (const s of statements(role)) {
      if (s.Effect !== 'Allow') continue;
      for (const a of actions(s)) {
        assert.ok(!a.includes('*'), `${name}: wildcard action ${a}`);
        const everything = s.Resource === '*' || (Array.isArray(s.Resource) && s.Resource.includes('*'));
        // The SSM agent's registration and Run Command's read of invocations have no resource type.
        const exempt = ['ssm:UpdateInstanceInformation', 'ssm:ListInstanceAssociations', 'ssm:DescribeDocument', 'ssm:GetDocument', 'ssm:DescribeInstanceInformation', 'ssm:GetCommandInvocation', 'ssm:ListCommandInvocations'];
        if (everything && !READ_ONLY.test(a) && !exempt.includes(a)) assert.fail(`${name}: ${a} is allowed on every resource`);
      }
    }
  }
});

test('template: the worker role reads EBS only on snapshots granted to that very instance, writes the repository prefix, and cannot delete or change retention', () => {
  const st = statements(R.WorkerRole);
  const ebs = st.find((s) => actions(s).includes('ebs:GetSnapshotBlock'));
  assert.deepEqual(ebs.Condition.StringEquals['aws:ResourceTag/tender:reader'], { 'Fn::Join': ['', ['$', '{ec2:SourceInstanceARN}']] });
  const put = st.find((s) => s.Effect === 'Allow' && actions(s).includes('s3:PutObject'));
  assert.match(JSON.stringify(put.Resource), /acme-backups\/tender\/\*/);
  const allowed = st.filter((s) => s.Effect === 'Allow').flatMap(actions);
  for (const a of ['s3:DeleteObject', 's3:DeleteObjectVersion', 's3:PutObjectRetention', 's3:PutObjectLegalHold', 's3:BypassGovernanceRetention', 's3:PutLifecycleConfiguration']) {
    assert.ok(!allowed.includes(a), `worker may not ${a}`);
  }
  const deny = st.find((s) => s.Effect === 'Deny');
  for (const a of ['s3:DeleteObject', 's3:PutObjectRetention', 's3:BypassGovernanceRetention']) assert.ok(actions(deny).includes(a));
  assert.equal(R.WorkerRole.Properties.AssumeRolePolicyDocument.Statement[0].Principal.Service, 'ec2.amazonaws.com');
  assert.deepEqual(R.WorkerInstanceProfile.Properties.Roles, [{ Ref: 'WorkerRole' }]);
});

test('template: the config bucket, and the optional repository bucket with Object Lock and a KMS key', () => {
  assert.equal(R.ConfigBucket.Type, 'AWS::S3::Bucket');
  assert.ok(R.ConfigBucket.Properties.LifecycleConfiguration.Rules.some((r: any) => r.Prefix === 'staging/' && r.ExpirationInDays === 1));
  const repo = R.RepositoryBucket.Properties;
  assert.equal(repo.ObjectLockEnabled, true);
  assert.deepEqual(repo.ObjectLockConfiguration.Rule.DefaultRetention, { Mode: 'GOVERNANCE', Days: 30 });
  assert.equal(repo.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'aws:kms');
  assert.equal(R.RepositoryKey.Type, 'AWS::KMS::Key');
  // The zstd codec ships next to the one function that opens the repository.
  const zips = readdirSync(out).filter((f) => f.endsWith('.zip'));
  assert.equal(zips.length, 13);
});

test('template: a fresh clone without a config file packages too (no schedules)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tender-sls-'));
  try {
    const res = packageOffline(dir, { TENDER_CONFIG: join(dir, 'no-such-config.yaml') });
    assert.equal(res.status, 0, res.stdout + res.stderr);
    const t = JSON.parse(readFileSync(join(dir, 'cloudformation-template-update-stack.json'), 'utf8'));
    assert.equal(Object.values(t.Resources).filter((r: any) => r.Type === 'AWS::Events::Rule').length, 0);
    assert.ok(Object.values(t.Resources).some((r: any) => r.Type === 'AWS::StepFunctions::StateMachine'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('template: each VM runs as a child execution (Distributed Map), and the state machine may start, watch and stop only its own', () => {
  const [[smName, sm]] = ofType('AWS::StepFunctions::StateMachine') as any;
  assert.match(JSON.stringify(sm.Properties.DefinitionString), /Mode\\?":\s*\\?"DISTRIBUTED/);
  const role = R[`${smName}Role`];
  const st = statements(role).filter((s: any) => actions(s).some((a) => a.startsWith('states:')));
  const start = st.filter((s: any) => actions(s).includes('states:StartExecution'));
  assert.equal(start.length, 1);
  assert.match(JSON.stringify(start[0].Resource), /:stateMachine:tender-ci-backup"/);
  const watch = st.filter((s: any) => actions(s).includes('states:StopExecution'));
  assert.ok(watch.some((s: any) => /:execution:tender-ci-backup\/\*"/.test(JSON.stringify(s.Resource))), 'child executions (<machine>/<label>:<id>) may be described and stopped');
  for (const s of st) assert.ok(!JSON.stringify(s.Resource).includes('"*"'), `no states: action on *: ${JSON.stringify(s)}`);
});
