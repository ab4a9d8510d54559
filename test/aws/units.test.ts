// Small pure pieces of the AWS side: cron translation, settings from the
// Lambda environment, error normalisation, the passphrase source, the deployed
// policy source, the S3 catalog and the generated IAM.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mockClient } from 'aws-sdk-client-mock';
import { SSMClient, GetParameterCommand } from '@aws-sdk/client-ssm';
import { toEventBridgeCron } from '../../shared/aws/schedule.js';
import { awsSettingsFromEnv } from '../../shared/aws/settings.js';
import { normaliseAwsError } from '../../shared/aws/aws-errors.js';
import { parameterNameOf, resolveAwsPassphrase } from '../../shared/aws/repository-key.js';
import { createPolicySource } from '../../shared/aws/policy-source.js';
import { createS3Catalog } from '../../shared/aws/s3-catalog.js';
import { createConfigBucket } from '../../shared/aws/run-resources.js';
import { buildDeployment } from '../../shared/aws/deploy-config.js';
import { archOf, publicAmiParameter } from '../../shared/aws/worker-ami.js';
import { AccessDeniedError, CapacityError, ConfigError, NotFoundError, TransientError, ValidationError } from '../../shared/core/errors.js';
import { parseConfig } from '../../shared/core/config.js';
import { BUCKET, awsError, createFakeAws, type FakeAws } from './fake-aws.js';
import { awsPolicy } from './fixtures.js';

let fake: FakeAws | undefined;
afterEach(() => {
  fake?.restore();
  fake = undefined;
});

test('schedule: 5-field cron becomes EventBridge cron — a "?" day field, Sunday = 1, increments from a start', () => {
  assert.equal(toEventBridgeCron('0 2 * * *'), 'cron(0 2 * * ? *)');
  assert.equal(toEventBridgeCron('30 1 * * 1-5'), 'cron(30 1 ? * 2-6 *)');
  assert.equal(toEventBridgeCron('0 4 * * 0,6'), 'cron(0 4 ? * 1,7 *)');
  assert.equal(toEventBridgeCron('0 3 1 * *'), 'cron(0 3 1 * ? *)');
  assert.equal(toEventBridgeCron('*/15 * * * *'), 'cron(0/15 * * * ? *)');
  assert.throws(() => toEventBridgeCron('0 2 1 * 1', 'web'), (e: Error) => e instanceof ConfigError && /policy "web".*both day-of-month and day-of-week/.test(e.message));
});

test('settings: read from the Lambda environment; what is missing is named with its variable', () => {
  const s = awsSettingsFromEnv({ AWS_REGION: 'eu-west-1', TENDER_CONFIG_BUCKET: 'cfg-bucket', TENDER_NAME_PREFIX: 'tender-prod', TENDER_WORKER_INSTANCE_PROFILE: 'arn:aws:iam::1:instance-profile/x', TENDER_REGIONS: 'eu-west-1, eu-central-1', TENDER_SNAPSHOT_ROLE_ARN: 'arn:aws:iam::222233334444:role/TenderSnapshots', TENDER_SNAPSHOT_EXTERNAL_ID: 'ext-123', TENDER_WORKER_AMI: '' });
  assert.deepEqual(s.regions, ['eu-west-1', 'eu-central-1']);
  assert.deepEqual(s.snapshotRole, { roleArn: 'arn:aws:iam::222233334444:role/TenderSnapshots', externalId: 'ext-123' });
  assert.equal(s.workerAmi, undefined);
  assert.equal(s.policyParameterPrefix, '/tender-prod/policies/');
  assert.equal(s.networkPreflight, 'enforce');
  assert.throws(() => awsSettingsFromEnv({ AWS_REGION: 'eu-west-1', TENDER_NAME_PREFIX: 'x' }), (e: Error) => e instanceof ConfigError && /TENDER_CONFIG_BUCKET/.test(e.message) && /TENDER_WORKER_INSTANCE_PROFILE/.test(e.message));
});

test('errors: SDK errors become the named errors the state machine matches', () => {
  assert.ok(normaliseAwsError(awsError('ThrottlingException', 'Rate exceeded'), 'x') instanceof TransientError);
  assert.ok(normaliseAwsError(awsError('InternalError', 'oops', 500), 'x') instanceof TransientError);
  assert.ok(normaliseAwsError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), 'x') instanceof TransientError);
  assert.ok(normaliseAwsError(awsError('InsufficientInstanceCapacity'), 'x') instanceof CapacityError);
  assert.ok(normaliseAwsError(awsError('IdempotentParameterMismatch'), 'x') instanceof ValidationError);
  const denied = normaliseAwsError(awsError('UnauthorizedOperation', 'not authorized', 403), 'ec2:RunInstances', 'grant ec2:RunInstances');
  assert.ok(denied instanceof AccessDeniedError && /grant ec2:RunInstances/.test(denied.message));
  assert.ok(normaliseAwsError(awsError('InvalidSnapshot.NotFound'), 'x') instanceof NotFoundError);
});

test('repository key: an SSM SecureString or a Secrets Manager secret (through SSM) by ARN, decrypted; a file or missing secret is a ConfigError', async () => {
  const ssm = mockClient(SSMClient);
  try {
    ssm.on(GetParameterCommand, { Name: '/tender/passphrase', WithDecryption: true }).resolves({ Parameter: { Value: 'correct horse' } });
    ssm.on(GetParameterCommand, { Name: '/aws/reference/secretsmanager/tender-db-AbCdEf', WithDecryption: true }).resolves({ Parameter: { Value: 'battery staple' } });
    const client = () => new SSMClient({ region: 'eu-west-1' });
    assert.equal(await resolveAwsPassphrase({ kmsKeyId: 'k', passphraseSecretArn: 'arn:aws:ssm:eu-west-1:111122223333:parameter/tender/passphrase' }, { ssm: client }), 'correct horse');
    assert.equal(await resolveAwsPassphrase({ kmsKeyId: 'k', passphraseSecretArn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:tender-db-AbCdEf' }, { ssm: client }), 'battery staple');
    await assert.rejects(resolveAwsPassphrase({ kmsKeyId: 'k' }, { ssm: client }), ConfigError);
    await assert.rejects(resolveAwsPassphrase({ passphraseFile: '/etc/x' }, { ssm: client }), ConfigError);
    assert.equal(parameterNameOf('/plain/name'), '/plain/name');
  } finally {
    ssm.restore();
  }
});

test('policy source: a schedule\'s { policyName } reads the deployed policy; an unknown name is a NotFoundError that says to deploy', async () => {
  fake = createFakeAws();
  fake.world.parameters.set('/tender-test/policies/web', JSON.stringify({ applianceId: 'acme', policy: awsPolicy }));
  const source = createPolicySource({ ssm: () => fake!.clients.ssm, prefix: '/tender-test/policies/' });
  const got = await source.load('web');
  assert.equal(got.applianceId, 'acme');
  assert.equal(got.policy.repository.url, 's3://acme-backups/tender');
  await assert.rejects(source.load('nope'), (e: Error) => e instanceof NotFoundError && /deploy again/.test(e.message));
});

test('catalog: one record per (run, VM) in the config bucket, the last write wins, listed oldest first and filtered', async () => {
  fake = createFakeAws();
  const catalog = createS3Catalog({ configBucket: createConfigBucket({ s3: fake.clients.s3, bucket: BUCKET }) });
  await catalog.recordRun({ runId: 'r2', policy: 'web', vmId: 'i-1', outcome: 'failed', finishedAt: '2024-05-02T00:00:00Z' });
  await catalog.recordRun({ runId: 'r1', policy: 'web', vmId: 'i-1', outcome: 'succeeded', snapshotSetId: 'ss-r1-i-1', finishedAt: '2024-05-01T00:00:00Z' });
  await catalog.recordRun({ runId: 'r2', policy: 'web', vmId: 'i-1', outcome: 'succeeded', finishedAt: '2024-05-02T00:00:00Z' });
  await catalog.recordRun({ runId: 'r1', policy: 'db', vmId: 'i-2', outcome: 'succeeded', finishedAt: '2024-05-01T00:00:00Z' });
  const web = await catalog.listRuns({ vmId: 'i-1' });
  assert.deepEqual(web.map((r) => [r.runId, r.outcome]), [['r1', 'succeeded'], ['r2', 'succeeded']]);
  assert.deepEqual((await catalog.listRuns({ policy: 'db' })).map((r) => r.vmId), ['i-2']);
  assert.equal((await catalog.listRuns()).length, 3);
});

test('worker AMI: the public AL2023 / Ubuntu 22.04 parameter for the instance type\'s architecture', () => {
  assert.equal(archOf('c5.large'), 'x86_64');
  assert.equal(archOf('c7gn.2xlarge'), 'arm64');
  assert.equal(archOf('t4g.small'), 'arm64');
  assert.equal(archOf('g5.xlarge'), 'x86_64');
  assert.equal(publicAmiParameter('al2023', 'arm64'), '/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64');
  assert.equal(publicAmiParameter('ubuntu2204', 'x86_64'), '/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id');
});

test('deploy config: cross-account deployments keep snapshot rights in the production role — the Lambdas only assume it, with no EC2 snapshot writes of their own', () => {
  const config = parseConfig({ applianceId: 'acme', policies: [{ ...awsPolicy, repository: { url: 's3://acme-backups/tender', key: { passphraseEnv: 'X' } } }] });
  const d = buildDeployment({ service: 'tender', stage: 'prod', region: 'eu-west-1', config, snapshotRoleArn: 'arn:aws:iam::222233334444:role/TenderSnapshots' });
  const st = (d.resources.Resources.SnapshotRole as any).Properties.Policies[0].PolicyDocument.Statement;
  assert.deepEqual(st.slice(1), [{ Effect: 'Allow', Action: ['sts:AssumeRole'], Resource: 'arn:aws:iam::222233334444:role/TenderSnapshots' }]);
  const worker = (d.resources.Resources.WorkerRole as any).Properties.Policies[0].PolicyDocument.Statement;
  assert.ok(worker.some((s: any) => s.Action.includes('sts:AssumeRole')), 'the worker reads production snapshots through the role');
  assert.ok(!worker.some((s: any) => s.Action.includes('ebs:GetSnapshotBlock')));
  assert.deepEqual(d.scheduleEvents.map((e) => e.schedule.input), [{ policyName: 'web' }]);
  // With a read-only worker role in production, workers may assume that one and no other.
  const ro = buildDeployment({ service: 'tender', stage: 'prod', region: 'eu-west-1', config, snapshotRoleArn: 'arn:aws:iam::222233334444:role/TenderSnapshots', workerSnapshotRoleArn: 'arn:aws:iam::222233334444:role/TenderWorkerReads' });
  const roWorker = (ro.resources.Resources.WorkerRole as any).Properties.Policies[0].PolicyDocument.Statement;
  assert.deepEqual(roWorker.filter((s: any) => s.Action.includes('sts:AssumeRole')).map((s: any) => s.Resource), ['arn:aws:iam::222233334444:role/TenderWorkerReads']);
  const roSnap = (ro.resources.Resources.SnapshotRole as any).Properties.Policies[0].PolicyDocument.Statement;
  assert.deepEqual(roSnap.slice(1)[0].Resource, 'arn:aws:iam::222233334444:role/TenderSnapshots', 'the steps keep the snapshot role');
  const settings = awsSettingsFromEnv({ AWS_REGION: 'eu-west-1', TENDER_CONFIG_BUCKET: 'cfg-bucket', TENDER_NAME_PREFIX: 'tender-prod', TENDER_WORKER_INSTANCE_PROFILE: 'arn:aws:iam::1:instance-profile/x', TENDER_SNAPSHOT_ROLE_ARN: 'arn:aws:iam::222233334444:role/TenderSnapshots', TENDER_WORKER_SNAPSHOT_ROLE_ARN: 'arn:aws:iam::222233334444:role/TenderWorkerReads', TENDER_SNAPSHOT_EXTERNAL_ID: 'ext-1' });
  assert.deepEqual(settings.workerSnapshotRole, { roleArn: 'arn:aws:iam::222233334444:role/TenderWorkerReads', externalId: 'ext-1' });
});

test('repository key on AWS: kmsKeyId alone means the KMS key wraps the repository key; with a secret it is a passphrase', async () => {
  const { resolveAwsRepositorySecret } = await import('../../shared/aws/repository-key.js');
  const secret = await resolveAwsRepositorySecret({ kmsKeyId: 'alias/tender' }, { ssm: () => { throw new Error('no SSM call expected'); } });
  assert.ok(typeof secret !== 'string' && secret.provider === 'aws-kms' && secret.keyId === 'alias/tender');
});
