// `tender check-network aws|azure`: says, before the first backup, what a
// worker without a public IP would be missing and how to fix it. Reads the
// network live or from the clouds' CLI JSON (--from DIR); flags override the
// placement in tender.config.yaml. Exit 0: nothing fails; 1: a check fails;
// 2: the checks could not run (missing flags, unreadable or malformed input).

import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { TokenCredential } from '@azure/identity';
import { parseConfigYaml, findPolicy, type Config, type Policy, type Placement } from '../shared/core/config.js';
import { toError } from '../shared/core/errors.js';
import { checkAwsNetwork, requiredAwsServices, workerCallsKms } from '../shared/core/network/aws-checks.js';
import { checkAzureNetwork, TENDER_DEPLOYMENT_TAG, normaliseLocation } from '../shared/core/network/azure-checks.js';
import { formatFindingsJson, formatFindingsTable, toReport } from '../shared/core/network/report.js';
import type { Finding } from '../shared/core/network/types.js';
import { createAwsNetworkReader, readAwsNetworkFromDir, AWS_NETWORK_FILES } from '../shared/aws/network-reader.js';
import {
  createAzureNetworkReader,
  readAzureNetworkFromDir,
  AZURE_NETWORK_FILES,
  type AzurePrivateDnsLister,
  type ComputeClientLike,
  type NetworkClientLike,
  type StorageClientLike,
} from '../shared/azure/network-reader.js';

export interface CheckNetworkIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  cwd: string;
  env: NodeJS.ProcessEnv;
}

/** Clients for live reads; tests inject mocks, the CLI leaves them out. */
export interface CheckNetworkDeps {
  ec2?: EC2Client;
  azure?: {
    credential?: TokenCredential;
    network?: NetworkClientLike;
    storage?: StorageClientLike;
    compute?: ComputeClientLike;
    privateDns?: AzurePrivateDnsLister;
  };
}

const awsFiles = Object.values(AWS_NETWORK_FILES).map((f) => `      ${f.file.padEnd(40)} aws ec2 ${f.call} --output json`).join('\n');
const azureFiles = Object.values(AZURE_NETWORK_FILES).map((f) => `      ${f.file.padEnd(44)} ${f.command}`).join('\n');

export const CHECK_NETWORK_HELP = `Usage:
  tender check-network aws   [--region R] [--worker-subnet SUBNET] [--worker-security-group SG ...]
                             [--repository-vpc VPC ...] [--appliance-cidr CIDR] [--kms] [--service NAME ...]
                             [--from DIR] [--json] [--config FILE] [--policy NAME]
  tender check-network azure [--region LOCATION] [--worker-subnet SUBNET-ID|NAME] [--worker-vnet VNET]
                             [--deployment-id ID] [--deployment-tag NAME] [--subscription ID]
                             [--from DIR] [--json] [--config FILE] [--policy NAME]

Says, before any worker starts, what a worker without a public IP would be missing
(private endpoints, DNS, security rules, peering, routes) and the concrete fix for each.

Placement: flags win; what is not given comes from tender.config.yaml (or --config FILE, or TENDER_CONFIG):
the policy's worker.placement[region] gives subnet, securityGroups and network. With
several policies, --policy NAME picks one; with one placement region, --region may be left out.

AWS options:
  --region R                   region of the worker (endpoint service names com.amazonaws.R.<svc>)
  --worker-subnet SUBNET       subnet the worker is launched in
  --worker-security-group SG   the worker's security group (repeat for several; none: the VPC's default group)
  --repository-vpc VPC         VPC holding the repository's S3 interface endpoint, reached through peering
                               (repeat for an archive repository); none: the S3 endpoint must be in the worker VPC
  --appliance-cidr CIDR        another client of the S3 endpoint (appliance, operator host): needs 443 there too
  --kms                        the repository key is a KMS key (implied by a policy with key.kmsKeyId)
  --service NAME               another service that needs an interface endpoint (repeatable)
  --from DIR                   read these files instead of calling AWS (several accounts may be appended in one):
${awsFiles}

Azure options:
  --region LOCATION            Azure location of the worker, e.g. westeurope
  --worker-subnet SUBNET       subnet resource id, or its name with --worker-vnet
  --worker-vnet VNET           VNET name or resource id (placement.network)
  --deployment-id ID           value of the ${TENDER_DEPLOYMENT_TAG} tag on the regional storage account
                               (default: applianceId from the config, else "tender")
  --deployment-tag NAME        tag name (default ${TENDER_DEPLOYMENT_TAG})
  --subscription ID            subscription to read live (default AZURE_SUBSCRIPTION_ID)
  --from DIR                   read these files instead of calling Azure (per-zone outputs appended with >>):
${azureFiles}

Output:
  a table per check (pass / warn / fail, resource, what is wrong, fix), or with --json
  { "ok": boolean, "findings": [{ "check", "status", "resource", "message", "fix" }] }

Exit codes: 0 nothing fails, 1 a check fails, 2 bad input (missing flags, unreadable or malformed files).
Checks and their ids: docs/check-network.md.
`;

class UsageError extends Error {}

const OPTIONS = {
  region: { type: 'string' },
  'worker-subnet': { type: 'string' },
  'worker-security-group': { type: 'string', multiple: true },
  'repository-vpc': { type: 'string', multiple: true },
  'appliance-cidr': { type: 'string' },
  kms: { type: 'boolean' },
  service: { type: 'string', multiple: true },
  'worker-vnet': { type: 'string' },
  'deployment-id': { type: 'string' },
  'deployment-tag': { type: 'string' },
  subscription: { type: 'string' },
  from: { type: 'string' },
  json: { type: 'boolean' },
  config: { type: 'string' },
  policy: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const AWS_ONLY = ['worker-security-group', 'repository-vpc', 'appliance-cidr', 'kms', 'service'] as const;
const AZURE_ONLY = ['worker-vnet', 'deployment-id', 'deployment-tag', 'subscription'] as const;

async function loadConfig(path: string, explicit: boolean): Promise<Config | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !explicit) return undefined;
    throw new UsageError(`cannot read the config ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseConfigYaml(text, path);
}

/** The policy and region whose placement fills in what the flags leave out. */
function pickPlacement(cfg: Config | undefined, provider: 'aws' | 'azure', policyName: string | undefined, region: string | undefined) {
  if (!cfg) return {};
  let candidates: Policy[];
  if (policyName) {
    const p = findPolicy(cfg, policyName);
    if (p.provider !== provider) throw new UsageError(`policy "${p.name}" is a ${p.provider} policy, not ${provider}`);
    candidates = [p];
  } else candidates = cfg.policies.filter((p) => p.provider === provider);
  const norm = (r: string) => (provider === 'azure' ? normaliseLocation(r) : r);
  if (!region) {
    const regions = [...new Set(candidates.flatMap((p) => Object.keys(p.worker.placement)))];
    if (regions.length === 1) region = regions[0];
    else if (regions.length > 1) throw new UsageError(`missing --region: the config places workers in ${regions.join(', ')} — name one`);
  }
  if (!region) return { policy: candidates[0] };
  for (const p of candidates) {
    const entry = Object.entries(p.worker.placement).find(([r]) => norm(r) === norm(region!));
    if (entry) return { policy: p, region, placement: entry[1] as Placement };
  }
  return { policy: candidates[0], region };
}

async function runAws(values: Record<string, any>, io: CheckNetworkIo, deps: CheckNetworkDeps): Promise<Finding[]> {
  const configPath = resolve(io.cwd, values.config ?? io.env.TENDER_CONFIG ?? 'tender.config.yaml');
  const cfg = await loadConfig(configPath, (values.config ?? io.env.TENDER_CONFIG) !== undefined);
  const picked = pickPlacement(cfg, 'aws', values.policy, values.region);
  const region: string | undefined = values.region ?? picked.region ?? io.env.AWS_REGION ?? io.env.AWS_DEFAULT_REGION;
  if (!region) throw new UsageError('missing --region (or a worker.placement region in tender.config.yaml, or AWS_REGION)');
  const subnet: string | undefined = values['worker-subnet'] ?? picked.placement?.subnet;
  if (!subnet) throw new UsageError(`missing --worker-subnet (or worker.placement.${region}.subnet in tender.config.yaml)`);
  const sgs: string[] = values['worker-security-group'] ?? picked.placement?.securityGroups ?? [];
  const key = picked.policy?.repository.key as Record<string, unknown> | undefined;
  const kms = values.kms === true || workerCallsKms(key);

  const model = values.from
    ? await readAwsNetworkFromDir(resolve(io.cwd, values.from), region)
    : await createAwsNetworkReader({ region, client: deps.ec2 }).read();
  return checkAwsNetwork(model, {
    region,
    workerSubnetId: subnet,
    workerSecurityGroupIds: sgs,
    // The config's network only constrains the subnet when the subnet came from the config too.
    workerVpcId: values['worker-subnet'] ? undefined : picked.placement?.network,
    repositoryVpcIds: values['repository-vpc'] ?? [],
    applianceCidr: values['appliance-cidr'],
    services: requiredAwsServices({ kms, extra: values.service }),
  });
}

async function runAzure(values: Record<string, any>, io: CheckNetworkIo, deps: CheckNetworkDeps): Promise<Finding[]> {
  const configPath = resolve(io.cwd, values.config ?? io.env.TENDER_CONFIG ?? 'tender.config.yaml');
  const cfg = await loadConfig(configPath, (values.config ?? io.env.TENDER_CONFIG) !== undefined);
  const picked = pickPlacement(cfg, 'azure', values.policy, values.region);
  const region: string | undefined = values.region ?? picked.region;
  if (!region) throw new UsageError('missing --region (or a worker.placement region in tender.config.yaml)');
  const subnet: string | undefined = values['worker-subnet'] ?? picked.placement?.subnet;
  if (!subnet) throw new UsageError(`missing --worker-subnet (or worker.placement.${region}.subnet in tender.config.yaml)`);
  const vnet: string | undefined = values['worker-vnet'] ?? (values['worker-subnet'] ? undefined : picked.placement?.network);
  const deploymentId: string = values['deployment-id'] ?? cfg?.applianceId ?? 'tender';

  const model = values.from
    ? await readAzureNetworkFromDir(resolve(io.cwd, values.from), region)
    : await createAzureNetworkReader({ region, subscriptionId: values.subscription ?? io.env.AZURE_SUBSCRIPTION_ID, ...deps.azure }).read();
  return checkAzureNetwork(model, {
    region,
    workerSubnet: subnet,
    workerVnet: vnet,
    deploymentId,
    deploymentTag: values['deployment-tag'],
  });
}

export async function checkNetworkCommand(argv: string[], io: CheckNetworkIo, deps: CheckNetworkDeps = {}): Promise<number> {
  const args = argv[0] === 'check-network' ? argv.slice(1) : argv;
  let values: Record<string, any>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true }));
  } catch (e) {
    io.stderr(`tender check-network: ${(e as Error).message}\nRun \`tender check-network --help\` for the options.\n`);
    return 2;
  }
  if (values.help) {
    io.stdout(CHECK_NETWORK_HELP);
    return 0;
  }
  const provider = positionals[0];
  if (provider !== 'aws' && provider !== 'azure' || positionals.length > 1) {
    io.stderr(`tender check-network: ${provider === undefined ? 'name the cloud' : positionals.length > 1 ? `unexpected argument "${positionals[1]}"` : `unknown cloud "${provider}"`}: use \`tender check-network aws …\` or \`tender check-network azure …\` (--help for the options)\n`);
    return 2;
  }
  const foreign = (provider === 'aws' ? AZURE_ONLY : AWS_ONLY).filter((k) => values[k] !== undefined);
  if (foreign.length) {
    io.stderr(`tender check-network ${provider}: ${foreign.map((k) => `--${k}`).join(', ')} ${foreign.length > 1 ? 'are' : 'is'} not an option for ${provider} (--help for the options)\n`);
    return 2;
  }
  let findings: Finding[];
  try {
    findings = provider === 'aws' ? await runAws(values, io, deps) : await runAzure(values, io, deps);
  } catch (e) {
    const err = toError(e);
    io.stderr(`tender check-network ${provider}: ${err.message}\n`);
    return 2;
  }
  const report = toReport(findings);
  io.stdout(values.json ? formatFindingsJson(findings) : formatFindingsTable(findings));
  return report.ok ? 0 : 1;
}
