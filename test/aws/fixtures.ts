// Policies, run contexts and settings the AWS tests share.

import { PolicySchema } from '../../shared/core/config.js';
import { RunContextSchema, type RunContext } from '../../shared/core/run-schemas.js';
import type { AwsSettings } from '../../shared/aws/settings.js';
import { BUCKET, REGION } from './fake-aws.js';

export const awsPolicy = PolicySchema.parse({
  name: 'web',
  provider: 'aws',
  vms: { tags: { backup: 'web' } },
  retention: { last: 0, daily: 1, weekly: 0, monthly: 0, yearly: 0 },
  repository: { url: 's3://acme-backups/tender', key: { passphraseEnv: 'TENDER_TEST_PASSPHRASE' } },
  worker: {
    privateNetwork: true,
    placement: { [REGION]: { subnet: 'subnet-0abc', securityGroups: ['sg-0abc'], network: 'vpc-0abc' } },
    tags: { Name: 'tender-%policyName%', CostCenter: '%applianceId%' },
  },
});

export function runContext(runId = 'r1'): RunContext {
  return RunContextSchema.parse({
    runId,
    applianceId: 'acme',
    policy: awsPolicy.name,
    policyId: 'pol-0123456789ab',
    provider: 'aws',
    startedAt: '2024-05-01T02:00:00.000Z',
    repository: awsPolicy.repository,
    retention: awsPolicy.retention,
    worker: awsPolicy.worker,
    tags: { policy: 'web', schedule: awsPolicy.schedule },
  });
}

export const settings: AwsSettings = {
  region: REGION,
  regions: [REGION],
  configBucket: BUCKET,
  namePrefix: 'tender-test',
  workerInstanceProfile: 'arn:aws:iam::111122223333:instance-profile/tender-test-worker',
  workerOs: 'al2023',
  heartbeatTimeoutSeconds: 300,
  networkPreflight: 'off',
  repositoryVpcIds: [],
  policyParameterPrefix: '/tender-test/policies/',
};
