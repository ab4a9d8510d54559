// Serverless variable source (`${file(./shared/aws/serverless-vars.cjs):…}`):
// loads the config file and returns what serverless.yml derives from it —
// schedules, IAM roles, policy parameters (shared/aws/deploy-config.ts). Plain
// CommonJS because osls `require`s it; the TypeScript is loaded through tsx.
//
//   TENDER_CONFIG               config file (default ./tender.config.yaml); none: no schedules
//   TENDER_REGIONS              Regions with VMs to back up (default: the deploy Region)
//   TENDER_SNAPSHOT_ROLE_ARN    cross-account: the production account's role
//   TENDER_WORKER_SNAPSHOT_ROLE_ARN  cross-account: its read-only role for workers
//   TENDER_WORKER_AMI           an AMI id or an SSM parameter name instead of the public one
//   TENDER_REPOSITORY_BUCKET    create this repository bucket in the stack, with
//   TENDER_REPOSITORY_OBJECT_LOCK_DAYS (0 = none), TENDER_REPOSITORY_OBJECT_LOCK_MODE
//   (GOVERNANCE | COMPLIANCE) and TENDER_REPOSITORY_KMS=true for a KMS key
const path = require('node:path');

module.exports = async ({ resolveVariable }) => {
  const { require: tsxRequire } = require('tsx/cjs/api');
  const mod = tsxRequire('./deploy-config.ts', __filename);
  const env = process.env;
  const service = await resolveVariable('self:service');
  const stage = await resolveVariable('sls:stage');
  const region = await resolveVariable('self:provider.region');
  const root = path.resolve(__dirname, '..', '..');
  const configPath = path.resolve(root, env.TENDER_CONFIG || 'tender.config.yaml');
  const config = mod.loadDeployConfig(configPath);
  if (!config) process.stderr.write(`tender: no config file at ${configPath} — packaging without policies (no schedules); set TENDER_CONFIG\n`);
  const ami = (env.TENDER_WORKER_AMI || '').trim();
  const lockDays = Number(env.TENDER_REPOSITORY_OBJECT_LOCK_DAYS || 0);
  const d = mod.buildDeployment({
    service,
    stage,
    region,
    regions: (env.TENDER_REGIONS || '').split(',').map((s) => s.trim()).filter(Boolean),
    config,
    snapshotRoleArn: env.TENDER_SNAPSHOT_ROLE_ARN || undefined,
    workerSnapshotRoleArn: env.TENDER_WORKER_SNAPSHOT_ROLE_ARN || undefined,
    amiParameter: ami.startsWith('/') ? ami : undefined,
    customAmi: ami !== '',
    repositoryBucket: env.TENDER_REPOSITORY_BUCKET
      ? { name: env.TENDER_REPOSITORY_BUCKET, objectLockDays: lockDays, objectLockMode: env.TENDER_REPOSITORY_OBJECT_LOCK_MODE === 'COMPLIANCE' ? 'COMPLIANCE' : 'GOVERNANCE', kms: env.TENDER_REPOSITORY_KMS === 'true' }
      : undefined,
  });
  return d;
};
