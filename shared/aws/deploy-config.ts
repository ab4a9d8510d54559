// What serverless.yml derives from the config file at package time (through
// shared/aws/serverless-vars.cjs): one EventBridge schedule per enabled AWS
// policy, one SSM parameter per policy (what a run reads), and the IAM roles —
// one per function, least privilege, plus the worker's instance role — and,
// when asked, the repository bucket with S3 Object Lock and a KMS key.
// Pure: tests check the statements here and in the packaged template.
//
// IAM rules kept throughout:
// - no wildcard in an Allow's actions; Resource "*" only for read-only
//   Describe/List calls that support nothing narrower (and the SSM agent's
//   message channel, which has no resource type);
// - what destroys (TerminateInstances, DeleteSnapshot) or grants (CreateTags /
//   DeleteTags of tender:reader) is conditioned on Tender's tags;
// - RunInstances only with Tender's tags, IMDSv2 (ec2:MetadataHttpTokens) and,
//   when every policy is private, no public IP (ec2:AssociatePublicIpAddress).

import { existsSync, readFileSync } from 'node:fs';
import type { Config, Policy } from '../core/config.js';
import { parseConfigYaml } from '../core/config.js';
import { toEventBridgeCron } from './schedule.js';
import { TAG, WORKER_ROLE_VALUE, hashOf } from './naming.js';
import { parameterNameOf } from './repository-key.js';

export interface DeployInputs {
  service: string;
  stage: string;
  /** The deployment's Region (provider.region). */
  region: string;
  /** Every Region with VMs to back up (TENDER_REGIONS); default [region]. */
  regions?: string[];
  config?: Config;
  /** Cross-account: the production account's role the snapshot steps assume. */
  snapshotRoleArn?: string;
  /**
   * Cross-account: a second, read-only role in the production account that workers assume to
   * read snapshots (EBS direct reads only). Without it workers assume the snapshot role, which
   * can also create, tag and delete snapshots.
   */
  workerSnapshotRoleArn?: string;
  /** An SSM parameter name replacing the public AMI parameter (TENDER_WORKER_AMI starting with "/"). */
  amiParameter?: string;
  /** A custom AMI (id or parameter): no owner condition on ec2:RunInstances' image. */
  customAmi?: boolean;
  /** Create the repository bucket (Object Lock, KMS) with this name. */
  repositoryBucket?: { name: string; objectLockDays: number; objectLockMode: 'GOVERNANCE' | 'COMPLIANCE'; kms: boolean };
}

type Statement = { Effect: 'Allow' | 'Deny'; Action: string[]; Resource: unknown; Condition?: Record<string, Record<string, unknown>> };

const sub = (s: string) => ({ 'Fn::Sub': s });
const P = '${AWS::Partition}';
const A = '${AWS::AccountId}';

export const FUNCTION_NAMES = [
  'planBackup',
  'snapshot',
  'checkSnapshot',
  'deployWorker',
  'checkWorker',
  'installWorker',
  'startBackup',
  'checkBackup',
  'revokeAccess',
  'deallocateWorker',
  'recordOutcome',
  'cleanup',
  'applyRetention',
] as const;
export type FunctionName = (typeof FUNCTION_NAMES)[number];

export function roleLogicalId(fn: FunctionName): string {
  return `${fn[0]!.toUpperCase()}${fn.slice(1)}Role`;
}

export function awsPolicies(config: Config | undefined): Policy[] {
  return (config?.policies ?? []).filter((p) => p.provider === 'aws');
}

function s3Target(url: string): { bucket: string; prefix: string } | undefined {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m) return undefined;
  const prefix = m[2]!.replace(/\/+$/, '');
  return { bucket: m[1]!, prefix: prefix ? `${prefix}/` : '' };
}

export function buildDeployment(inp: DeployInputs) {
  const prefix = `${inp.service}-${inp.stage}`;
  const regions = inp.regions?.length ? inp.regions : [inp.region];
  const policies = awsPolicies(inp.config);
  const applianceId = inp.config?.applianceId ?? 'tender';
  const allPrivate = policies.every((p) => p.worker.privateNetwork);
  const perRegion = (f: (r: string) => string) => regions.map((r) => sub(f(r)));

  // ---- resource patterns --------------------------------------------------
  const bucketArn = '${ConfigBucket.Arn}';
  const cfg = (path: string) => sub(`${bucketArn}/${path}`);
  const queues = (suffix = '') => perRegion((r) => `arn:${P}:sqs:${r}:${A}:${prefix}-*${suffix}`);
  const instances = perRegion((r) => `arn:${P}:ec2:${r}:${A}:instance/*`);
  const snapshots = perRegion((r) => `arn:${P}:ec2:${r}::snapshot/*`);
  const volumes = perRegion((r) => `arn:${P}:ec2:${r}:${A}:volume/*`);
  const enis = perRegion((r) => `arn:${P}:ec2:${r}:${A}:network-interface/*`);
  const placements = policies.flatMap((p) => Object.entries(p.worker.placement).map(([r, pl]) => ({ region: r, ...pl })));
  const subnets = placements.length ? placements.map((pl) => sub(`arn:${P}:ec2:${pl.region}:${A}:subnet/${pl.subnet}`)) : perRegion((r) => `arn:${P}:ec2:${r}:${A}:subnet/*`);
  const groups = placements.some((pl) => pl.securityGroups.length === 0) || placements.length === 0
    ? perRegion((r) => `arn:${P}:ec2:${r}:${A}:security-group/*`)
    : placements.flatMap((pl) => pl.securityGroups.map((g) => sub(`arn:${P}:ec2:${pl.region}:${A}:security-group/${g}`)));
  const logsOf = (fn: FunctionName) => sub(`arn:${P}:logs:\${AWS::Region}:${A}:log-group:/aws/lambda/${prefix}-${fn}:*`);
  const tenderTagged = { StringEquals: { [`aws:ResourceTag/${TAG.appliance}`]: applianceId } };

  // ---- statement building blocks ------------------------------------------
  const allow = (Action: string[], Resource: unknown, Condition?: Statement['Condition']): Statement => ({ Effect: 'Allow', Action, Resource, ...(Condition ? { Condition } : {}) });
  const describe = (...actions: string[]) => allow(actions.map((a) => `ec2:${a}`), '*');
  const cfgRead = (...paths: string[]) => allow(['s3:GetObject'], paths.map(cfg));
  const cfgWrite = (...paths: string[]) => allow(['s3:PutObject'], paths.map(cfg));
  const cfgList = (...prefixes: string[]) => allow(['s3:ListBucket'], sub(bucketArn), { StringLike: { 's3:prefix': prefixes } });
  const assumeSnapshotRole = inp.snapshotRoleArn ? [allow(['sts:AssumeRole'], inp.snapshotRoleArn)] : [];
  /** Snapshot-side statements: in the production account through the role when cross-account, here otherwise. */
  const snap = (...st: Statement[]) => (inp.snapshotRoleArn ? assumeSnapshotRole : st);
  const deleteSnapshots = allow(['ec2:DeleteSnapshot'], snapshots, tenderTagged);
  const readerTag = (action: 'ec2:CreateTags' | 'ec2:DeleteTags') =>
    allow([action], snapshots, { ...tenderTagged, 'ForAllValues:StringEquals': { 'aws:TagKeys': [TAG.reader] } });
  const terminateWorkers = allow(['ec2:TerminateInstances'], instances, {
    StringEquals: { [`aws:ResourceTag/${TAG.role}`]: WORKER_ROLE_VALUE, [`aws:ResourceTag/${TAG.appliance}`]: applianceId },
  });
  const queueAdmin = allow(['sqs:CreateQueue', 'sqs:GetQueueUrl', 'sqs:TagQueue'], queues());
  const revokeStatements = [
    cfgList('staging/*'),
    allow(['s3:DeleteObject'], [cfg('staging/*')]),
    cfgRead('runs/*'),
    cfgWrite('runs/*'),
    allow(['sqs:GetQueueUrl', 'sqs:DeleteQueue'], queues()),
    ...snap(describe('DescribeSnapshots'), readerTag('ec2:DeleteTags')),
  ];
  const deallocateStatements = [describe('DescribeInstances'), terminateWorkers, cfgRead('runs/*')];
  const catalogRead = [cfgList('catalog/*'), cfgRead('catalog/*')];

  // Repository access of the retention step (it forgets restore points).
  const repos = policies.map((p) => ({ policy: p, target: s3Target(p.repository.url) })).filter((x) => x.target);
  const repoObjects = repos.map((r) => `arn:${P}:s3:::${r.target!.bucket}/${r.target!.prefix}*`);
  const repoBuckets = [...new Set(repos.map((r) => r.target!.bucket))];
  const keyAccess: Statement[] = [];
  for (const p of policies) {
    const k = p.repository.key;
    if ('kmsKeyId' in k) {
      // With no passphrase secret the KMS key wraps the repository's master key itself: the first
      // run wraps it (Encrypt), every run unwraps it (Decrypt), only for that purpose.
      const kmsActions = k.passphraseSecretArn ? ['kms:Decrypt'] : ['kms:Decrypt', 'kms:Encrypt'];
      const purpose: Record<string, Record<string, unknown>> = k.passphraseSecretArn ? {} : { StringEquals: { 'kms:EncryptionContext:tender:purpose': 'repository-master-key' } };
      if (k.kmsKeyId.startsWith('alias/') || k.kmsKeyId.includes(':alias/')) {
        // An alias is not a key ARN: IAM matches it through the key's aliases.
        const alias = k.kmsKeyId.slice(k.kmsKeyId.indexOf('alias/'));
        keyAccess.push(allow(kmsActions, sub(`arn:${P}:kms:*:${A}:key/*`), { 'ForAnyValue:StringEquals': { 'kms:ResourceAliases': [alias] }, ...purpose }));
      } else {
        const keyArn = k.kmsKeyId.startsWith('arn:') ? k.kmsKeyId : `arn:${P}:kms:\${AWS::Region}:${A}:key/${k.kmsKeyId}`;
        keyAccess.push(allow(kmsActions, sub(keyArn), k.passphraseSecretArn ? undefined : purpose));
      }
      if (k.passphraseSecretArn) {
        const name = parameterNameOf(k.passphraseSecretArn);
        if (name.startsWith('/aws/reference/secretsmanager/')) {
          keyAccess.push(allow(['secretsmanager:GetSecretValue'], k.passphraseSecretArn));
          keyAccess.push(allow(['ssm:GetParameter'], sub(`arn:${P}:ssm:\${AWS::Region}:${A}:parameter/aws/reference/secretsmanager/*`)));
        } else keyAccess.push(allow(['ssm:GetParameter'], k.passphraseSecretArn));
      }
    }
  }
  const repoKms = inp.repositoryBucket?.kms ? [allow(['kms:Decrypt', 'kms:GenerateDataKey'], { 'Fn::GetAtt': ['RepositoryKey', 'Arn'] })] : [];
  const retentionRepo: Statement[] = repos.length
    ? [
        allow(['s3:ListBucket'], repoBuckets.map((b) => sub(`arn:${P}:s3:::${b}`))),
        allow(['s3:GetObject', 's3:PutObject', 's3:DeleteObject'], repoObjects.map(sub)),
        ...keyAccess,
        ...repoKms,
      ]
    : [];

  const amiParams = [
    sub(`arn:${P}:ssm:*::parameter/aws/service/ami-amazon-linux-latest/*`),
    sub(`arn:${P}:ssm:*::parameter/aws/service/canonical/ubuntu/server/*`),
    ...(inp.amiParameter ? [sub(`arn:${P}:ssm:*:${A}:parameter${inp.amiParameter}`)] : []),
  ];
  const workerTagsOnLaunch = { StringEquals: { [`aws:RequestTag/${TAG.role}`]: WORKER_ROLE_VALUE, [`aws:RequestTag/${TAG.appliance}`]: applianceId } };

  const statements: Record<FunctionName, Statement[]> = {
    planBackup: [
      ...snap(describe('DescribeInstances', 'DescribeVolumes')),
      allow(['ssm:GetParameter'], sub(`arn:${P}:ssm:\${AWS::Region}:${A}:parameter/${prefix}/policies/*`)),
    ],
    snapshot: snap(
      describe('DescribeInstances', 'DescribeVolumes', 'DescribeSnapshots'),
      allow(['ec2:CreateSnapshots'], [...instances, ...volumes]),
      allow(['ec2:CreateSnapshots'], snapshots, { StringEquals: { [`aws:RequestTag/${TAG.appliance}`]: applianceId } }),
      allow(['ec2:CreateTags'], snapshots, { StringEquals: { 'ec2:CreateAction': 'CreateSnapshots' } }),
      allow(['ec2:CreateTags'], snapshots, { ...tenderTagged, 'ForAllValues:StringEquals': { 'aws:TagKeys': ['tender:device'] } }),
    ),
    checkSnapshot: snap(describe('DescribeSnapshots')),
    deployWorker: [
      describe('DescribeInstances', 'DescribeVpcs', 'DescribeSubnets', 'DescribeRouteTables', 'DescribeSecurityGroups', 'DescribeVpcEndpoints', 'DescribeVpcPeeringConnections'),
      allow(['ec2:RunInstances'], instances, {
        ...workerTagsOnLaunch,
        StringEquals: { ...workerTagsOnLaunch.StringEquals, 'ec2:MetadataHttpTokens': 'required' },
      }),
      allow(['ec2:RunInstances'], [...volumes], workerTagsOnLaunch),
      allow(['ec2:RunInstances'], enis, {
        ...workerTagsOnLaunch,
        ...(allPrivate ? { Bool: { 'ec2:AssociatePublicIpAddress': 'false' } } : {}),
      }),
      allow(['ec2:RunInstances'], [...subnets, ...groups]),
      allow(['ec2:RunInstances'], perRegion((r) => `arn:${P}:ec2:${r}::image/*`), inp.customAmi ? undefined : { StringEquals: { 'ec2:Owner': ['amazon', '099720109477'] } }),
      allow(['ec2:CreateTags'], [...instances, ...volumes, ...enis], { StringEquals: { 'ec2:CreateAction': 'RunInstances' } }),
      allow(['iam:PassRole'], { 'Fn::GetAtt': ['WorkerRole', 'Arn'] }, { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } }),
      allow(['ssm:GetParameter'], amiParams),
      cfgRead('runs/*'),
      cfgWrite('runs/*'),
    ],
    checkWorker: [describe('DescribeInstances'), allow(['ssm:DescribeInstanceInformation'], '*')],
    installWorker: [
      describe('DescribeInstances'),
      cfgRead('worker/*', 'runs/*', 'staging/*'),
      cfgWrite('staging/*', 'runs/*'),
      queueAdmin,
      allow(['ssm:SendCommand'], perRegion((r) => `arn:${P}:ssm:${r}::document/AWS-RunShellScript`)),
      allow(['ssm:SendCommand'], instances, { StringEquals: { [`ssm:resourceTag/${TAG.role}`]: WORKER_ROLE_VALUE, [`ssm:resourceTag/${TAG.appliance}`]: applianceId } }),
      allow(['ssm:GetCommandInvocation', 'ssm:ListCommandInvocations'], '*'),
      allow(['ec2:CreateTags'], instances, {
        StringEquals: { [`aws:ResourceTag/${TAG.role}`]: WORKER_ROLE_VALUE, [`aws:ResourceTag/${TAG.appliance}`]: applianceId },
        'ForAllValues:StringEquals': { 'aws:TagKeys': [TAG.installed] },
      }),
    ],
    startBackup: [
      describe('DescribeInstances'),
      ...snap(describe('DescribeSnapshots'), readerTag('ec2:CreateTags')),
      ...catalogRead,
      cfgRead('jobs/*', 'runs/*'),
      cfgWrite('jobs/*', 'runs/*'),
      queueAdmin,
      allow(['sqs:SendMessage'], queues('-job')),
    ],
    checkBackup: [describe('DescribeInstances'), cfgRead('jobs/*'), cfgWrite('jobs/*'), allow(['sqs:ReceiveMessage', 'sqs:DeleteMessage'], queues('-status'))],
    revokeAccess: revokeStatements,
    deallocateWorker: deallocateStatements,
    recordOutcome: [cfgWrite('catalog/*')],
    cleanup: [
      ...revokeStatements,
      ...deallocateStatements,
      ...snap(describe('DescribeSnapshots'), deleteSnapshots),
      ...catalogRead,
      cfgWrite('catalog/*'),
    ],
    applyRetention: [...catalogRead, ...snap(describe('DescribeSnapshots'), deleteSnapshots), ...retentionRepo],
  };

  const Resources: Record<string, unknown> = {};
  for (const fn of FUNCTION_NAMES) {
    Resources[roleLogicalId(fn)] = {
      Type: 'AWS::IAM::Role',
      Properties: {
        Description: `Tender ${prefix}: the ${fn} step`,
        AssumeRolePolicyDocument: { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' }] },
        Policies: [
          {
            PolicyName: `${fn}`,
            PolicyDocument: {
              Version: '2012-10-17',
              Statement: [allow(['logs:CreateLogStream', 'logs:PutLogEvents'], logsOf(fn)), ...statements[fn]],
            },
          },
        ],
      },
    };
  }

  // ---- the worker's instance role -----------------------------------------
  const reposForWorker = repos.map((r) => r.target!);
  // `${ec2:SourceInstanceARN}` is an IAM policy variable: built with Join so neither
  // Serverless nor Fn::Sub reads it as one of theirs.
  const sourceInstance = { 'Fn::Join': ['', ['$', '{ec2:SourceInstanceARN}']] };
  const workerStatements: Statement[] = [
    // The SSM agent (Run Command). Listed, not the AmazonSSMManagedInstanceCore policy, which also grants ssm:GetParameter on every parameter.
    allow(['ssm:UpdateInstanceInformation', 'ssm:ListInstanceAssociations', 'ssm:DescribeDocument', 'ssm:GetDocument'], '*'),
    allow(['ssmmessages:CreateControlChannel', 'ssmmessages:CreateDataChannel', 'ssmmessages:OpenControlChannel', 'ssmmessages:OpenDataChannel'], '*'),
    allow(['ec2messages:AcknowledgeMessage', 'ec2messages:DeleteMessage', 'ec2messages:FailMessage', 'ec2messages:GetEndpoint', 'ec2messages:GetMessages', 'ec2messages:SendReply'], '*'),
    allow(['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility'], queues('-job')),
    allow(['sqs:SendMessage'], queues('-status')),
    ...(inp.snapshotRoleArn
      ? [allow(['sts:AssumeRole'], inp.workerSnapshotRoleArn ?? inp.snapshotRoleArn)]
      : [allow(['ebs:ListSnapshotBlocks', 'ebs:ListChangedBlocks', 'ebs:GetSnapshotBlock'], snapshots, { StringEquals: { [`aws:ResourceTag/${TAG.reader}`]: sourceInstance } })]),
    ...(reposForWorker.length
      ? [
          allow(['s3:ListBucket'], [...new Set(reposForWorker.map((t) => t.bucket))].map((b) => sub(`arn:${P}:s3:::${b}`))),
          allow(['s3:GetObject', 's3:PutObject'], reposForWorker.map((t) => sub(`arn:${P}:s3:::${t.bucket}/${t.prefix}*`))),
          {
            Effect: 'Deny',
            Action: ['s3:DeleteObject', 's3:DeleteObjectVersion', 's3:PutObjectRetention', 's3:PutObjectLegalHold', 's3:BypassGovernanceRetention', 's3:PutLifecycleConfiguration', 's3:PutBucketObjectLockConfiguration', 's3:PutBucketPolicy', 's3:DeleteBucket'],
            Resource: [...new Set(reposForWorker.map((t) => t.bucket))].flatMap((b) => [sub(`arn:${P}:s3:::${b}`), sub(`arn:${P}:s3:::${b}/*`)]),
          } as Statement,
        ]
      : []),
    ...keyAccess,
    ...repoKms,
  ];
  Resources.WorkerRole = {
    Type: 'AWS::IAM::Role',
    Properties: {
      Description: `Tender ${prefix}: temporary backup workers`,
      AssumeRolePolicyDocument: { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }] },
      Policies: [{ PolicyName: 'worker', PolicyDocument: { Version: '2012-10-17', Statement: workerStatements } }],
      Tags: [{ Key: TAG.appliance, Value: applianceId }],
    },
  };
  Resources.WorkerInstanceProfile = { Type: 'AWS::IAM::InstanceProfile', Properties: { Roles: [{ Ref: 'WorkerRole' }] } };

  // ---- the deployed policies (what a run reads by name) --------------------
  for (const p of policies) {
    const value = JSON.stringify({ applianceId, policy: p });
    Resources[`Policy${hashOf(p.name).slice(0, 10)}Parameter`] = {
      Type: 'AWS::SSM::Parameter',
      Properties: {
        Name: `/${prefix}/policies/${p.name}`,
        Type: 'String',
        Tier: value.length > 4096 ? 'Advanced' : 'Standard',
        Description: `Tender policy "${p.name}"`,
        Value: value,
      },
    };
  }

  // ---- optional repository bucket: Object Lock + KMS ------------------------
  if (inp.repositoryBucket) {
    const rb = inp.repositoryBucket;
    if (rb.kms) {
      Resources.RepositoryKey = {
        Type: 'AWS::KMS::Key',
        DeletionPolicy: 'Retain',
        Properties: {
          Description: `Tender ${prefix}: repository bucket ${rb.name}`,
          EnableKeyRotation: true,
          KeyPolicy: {
            Version: '2012-10-17',
            Statement: [
              // The account administers the key through IAM; workers and the retention step get use via their roles.
              { Sid: 'AccountAdministers', Effect: 'Allow', Principal: { AWS: sub(`arn:${P}:iam::${A}:root`) }, Action: 'kms:*', Resource: '*' },
            ],
          },
        },
      };
    }
    Resources.RepositoryBucket = {
      Type: 'AWS::S3::Bucket',
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: {
        BucketName: rb.name,
        VersioningConfiguration: { Status: 'Enabled' },
        ...(rb.objectLockDays > 0
          ? { ObjectLockEnabled: true, ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: rb.objectLockMode, Days: rb.objectLockDays } } } }
          : {}),
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            rb.kms
              ? { ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: { 'Fn::GetAtt': ['RepositoryKey', 'Arn'] } }, BucketKeyEnabled: true }
              : { ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } },
          ],
        },
        PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
        OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
        LifecycleConfiguration: {
          Rules: [
            { Id: 'abort-incomplete-uploads', Status: 'Enabled', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 3 } },
            // Pruned / forgotten objects stay as noncurrent versions until their lock ends, then go.
            { Id: 'expire-noncurrent', Status: 'Enabled', NoncurrentVersionExpiration: { NoncurrentDays: Math.max(1, rb.objectLockDays + 1) } },
          ],
        },
        Tags: [{ Key: TAG.appliance, Value: applianceId }],
      },
    };
  }

  const scheduleEvents = policies.map((p) => ({
    schedule: {
      name: `${prefix}-${p.name}`.slice(0, 64),
      // The plugin pastes these into JSON text unescaped: no quotes in them.
      description: `Tender policy ${p.name} (${p.schedule} UTC)`,
      rate: toEventBridgeCron(p.schedule, p.name),
      enabled: p.enabled,
      input: { policyName: p.name },
    },
  }));

  return {
    scheduleEvents,
    resources: { Resources },
    regions: regions.join(','),
    summary: { policies: policies.map((p) => p.name), regions, allPrivate, applianceId },
  };
}

/** Reads the config file (TENDER_CONFIG or ./tender.config.yaml); none is fine: no schedules. */
export function loadDeployConfig(path: string): Config | undefined {
  if (!existsSync(path)) return undefined;
  return parseConfigYaml(readFileSync(path, 'utf8'), path);
}
