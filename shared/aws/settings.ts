// The deployment's settings, from the Lambda environment serverless.yml sets.
// Checked once at cold start with messages that name the variable and the fix.

import { z } from 'zod';
import { ConfigError } from '../core/errors.js';

export const AwsSettingsSchema = z.object({
  region: z.string().min(1),
  /** Regions whose VMs this deployment backs up (workers run in the VM's Region). */
  regions: z.array(z.string().min(1)).min(1),
  configBucket: z.string().min(3),
  /** `<service>-<stage>`: names of queues, parameters and workers. */
  namePrefix: z.string().min(1).max(56),
  workerInstanceProfile: z.string().min(1),
  workerOs: z.enum(['al2023', 'ubuntu2204']).default('al2023'),
  workerAmi: z.string().optional(),
  snapshotRole: z.object({ roleArn: z.string().min(1), externalId: z.string().optional() }).optional(),
  /** Cross-account: the read-only production role workers assume (default: snapshotRole). */
  workerSnapshotRole: z.object({ roleArn: z.string().min(1), externalId: z.string().optional() }).optional(),
  heartbeatTimeoutSeconds: z.number().int().min(30).default(300),
  networkPreflight: z.enum(['enforce', 'warn', 'off']).default('enforce'),
  /** VPCs whose S3 interface endpoint serves the repository (peered; seed 002). Empty: the worker's VPC. */
  repositoryVpcIds: z.array(z.string().min(1)).default([]),
  policyParameterPrefix: z.string().min(1),
});
export type AwsSettings = z.infer<typeof AwsSettingsSchema>;

export function awsSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): AwsSettings {
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || '';
  const prefix = env.TENDER_NAME_PREFIX ?? '';
  const raw = {
    region,
    regions: (env.TENDER_REGIONS || region).split(',').map((s) => s.trim()).filter(Boolean),
    configBucket: env.TENDER_CONFIG_BUCKET ?? '',
    namePrefix: prefix,
    workerInstanceProfile: env.TENDER_WORKER_INSTANCE_PROFILE ?? '',
    workerOs: env.TENDER_WORKER_OS || undefined,
    workerAmi: env.TENDER_WORKER_AMI || undefined,
    snapshotRole: env.TENDER_SNAPSHOT_ROLE_ARN ? { roleArn: env.TENDER_SNAPSHOT_ROLE_ARN, ...(env.TENDER_SNAPSHOT_EXTERNAL_ID ? { externalId: env.TENDER_SNAPSHOT_EXTERNAL_ID } : {}) } : undefined,
    workerSnapshotRole:
      env.TENDER_SNAPSHOT_ROLE_ARN && env.TENDER_WORKER_SNAPSHOT_ROLE_ARN ? { roleArn: env.TENDER_WORKER_SNAPSHOT_ROLE_ARN, ...(env.TENDER_SNAPSHOT_EXTERNAL_ID ? { externalId: env.TENDER_SNAPSHOT_EXTERNAL_ID } : {}) } : undefined,
    heartbeatTimeoutSeconds: env.TENDER_HEARTBEAT_TIMEOUT_SECONDS ? Number(env.TENDER_HEARTBEAT_TIMEOUT_SECONDS) : undefined,
    networkPreflight: env.TENDER_NETWORK_PREFLIGHT || undefined,
    repositoryVpcIds: (env.TENDER_REPOSITORY_VPC_IDS || '').split(',').map((s) => s.trim()).filter(Boolean),
    policyParameterPrefix: env.TENDER_POLICY_PARAMETER_PREFIX || `/${prefix}/policies/`,
  };
  const res = AwsSettingsSchema.safeParse(raw);
  if (!res.success) {
    const names: Record<string, string> = {
      region: 'AWS_REGION',
      regions: 'TENDER_REGIONS',
      configBucket: 'TENDER_CONFIG_BUCKET',
      namePrefix: 'TENDER_NAME_PREFIX',
      workerInstanceProfile: 'TENDER_WORKER_INSTANCE_PROFILE',
      workerOs: 'TENDER_WORKER_OS',
      heartbeatTimeoutSeconds: 'TENDER_HEARTBEAT_TIMEOUT_SECONDS',
      networkPreflight: 'TENDER_NETWORK_PREFLIGHT',
    };
    const lines = res.error.issues.map((i) => `${names[String(i.path[0])] ?? i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`the Lambda environment is incomplete (serverless.yml sets it):\n  - ${lines.join('\n  - ')}`);
  }
  return res.data;
}
