// Workers port on EC2 + SSM. One temporary instance per (run, VM):
// - RunInstances with a ClientToken derived from (run, VM), so a re-invoked
//   Lambda gets the same instance, never a second one; IMDSv2 required; no
//   public IP in private mode; the worker instance profile; the policy's
//   templated tags plus Tender's (tender:role=worker is what IAM conditions on
//   TerminateInstances and ssm:SendCommand match);
// - the worker software arrives through SSM Run Command (AWS-RunShellScript):
//   the bundle is copied to a per-(run, VM) staging key, presigned for a few
//   minutes, downloaded, checked against its sha256 and only then unpacked
//   and started (a digest mismatch exits 86 and nothing runs);
// - TerminateInstances, then wait until the instance is terminated.
// In private mode the region's network is checked first (the same checks as
// `tender check-network aws`): a worker that could not reach SSM, SQS, EBS or
// S3 would otherwise only show up as a hung install.

import {
  CreateTagsCommand,
  DescribeInstancesCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type Instance,
} from '@aws-sdk/client-ec2';
import {
  DescribeInstanceInformationCommand,
  GetCommandInvocationCommand,
  ListCommandInvocationsCommand,
  SendCommandCommand,
} from '@aws-sdk/client-ssm';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { DeployWorkerRequest, WorkerRef, Workers, WorkerState } from '../ports/cloud.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import { silentLogger } from '../core/logger.js';
import {
  BundleIntegrityError,
  ConfigError,
  NetworkPreflightError,
  NotReadyError,
  WorkerFailedError,
} from '../core/errors.js';
import { checkAwsNetwork, requiredAwsServices, workerCallsKms } from '../core/network/aws-checks.js';
import { failedChecks } from '../core/network/report.js';
import type { AwsNetworkModel } from '../core/network/types.js';
import { awsCall, awsErrorName, isAwsNotFound, normaliseAwsError } from './aws-errors.js';
import type { ClientsFor } from './clients.js';
import { TAG, WORKER_ROLE_VALUE, clientTokenOf, fromAwsTags, hashOf, runKeys, safeId, toAwsTags } from './naming.js';
import { ensureQueues, updateGrants, type ConfigBucket, type RunQueues } from './run-resources.js';
import { resolveWorkerAmi, type WorkerOs } from './worker-ami.js';

/** What `node shared/aws/build-worker-bundle.ts` uploads next to the bundle. */
export interface BundleManifest {
  /** Key of the bundle (a .tar.gz) in the config bucket. */
  key: string;
  sha256: string;
  bytes: number;
}

export const BUNDLE_MANIFEST_KEY = 'worker/manifest.json';
/** Exit codes of the install script the pipeline reads back. */
export const EXIT_INTEGRITY = 86;
export const EXIT_DOWNLOAD = 87;
export const EXIT_NO_NODE = 88;

export interface Ec2WorkersOptions {
  /** Backup-account clients (workers run there). */
  clients: Pick<ClientsFor, 'ec2' | 'ssm' | 'sqs'>;
  s3: S3Client;
  configBucket: ConfigBucket;
  /** `<service>-<stage>`: queue names and the instance Name default derive from it. */
  namePrefix: string;
  /** Regions searched for a run's worker when its Region is not known (cleanup before deploy returned). */
  regions: string[];
  /** The worker instance profile: an ARN or a name. */
  instanceProfile: string;
  os?: WorkerOs;
  /** An AMI id or an SSM parameter name that replaces the public parameter. */
  amiOverride?: string;
  /** enforce (default): a failing private-network check stops the deploy; warn: logs it; off. */
  preflight?: 'enforce' | 'warn' | 'off';
  /** Reads the Region's network for the preflight (default: the live EC2 reader). */
  readNetwork?: (region: string) => Promise<AwsNetworkModel>;
  /** VPCs whose S3 interface endpoint serves the repository, reached by peering (seed 002). */
  repositoryVpcIds?: string[];
  bundleUrlTtlSeconds?: number;
  installTimeoutMs?: number;
  pollMs?: number;
  terminateWaitMs?: number;
  /** A worker the pipeline lost track of powers itself off (and so terminates) after this long. */
  maxLifetimeHours?: number;
  presign?: (s3: S3Client, bucket: string, key: string, expiresIn: number) => Promise<string>;
  clock?: Clock;
  logger?: Logger;
}

export interface Ec2Workers extends Workers {
  /** The queues the worker's agent listens on (made at install). */
  queuesOf(runId: string, vmId: string, region: string): Promise<RunQueues>;
}

export function partitionOf(region: string): string {
  return region.startsWith('cn-') ? 'aws-cn' : region.startsWith('us-gov-') ? 'aws-us-gov' : 'aws';
}

export function instanceArn(region: string, account: string, instanceId: string): string {
  return `arn:${partitionOf(region)}:ec2:${region}:${account}:instance/${instanceId}`;
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The AWS-RunShellScript body that installs and starts the worker. */
export function installScript(p: { url: string; sha256: string; dir: string; unit: string; env: Record<string, string> }): string {
  const envArgs = Object.entries(p.env).map(([k, v]) => `--setenv=${k}=${shq(v)}`).join(' ');
  return [
    '#!/bin/bash',
    'set -uo pipefail',
    'umask 077',
    `DIR=${shq(p.dir)}`,
    'mkdir -p "$DIR" && cd "$DIR" || exit 1',
    `if systemctl is-active --quiet ${p.unit}; then echo "TENDER_INSTALLED ${p.sha256} (already running)"; exit 0; fi`,
    // The URL expires in minutes and its object is deleted at revoke; it is never written to disk.
    `if ! curl -fsS --retry 4 --retry-delay 2 --max-time 300 -o bundle.tar.gz ${shq(p.url)}; then echo "TENDER_BUNDLE_DOWNLOAD_FAILED"; exit ${EXIT_DOWNLOAD}; fi`,
    'GOT=$(sha256sum bundle.tar.gz | cut -d" " -f1)',
    `if [ "$GOT" != ${shq(p.sha256)} ]; then echo "TENDER_BUNDLE_INTEGRITY got=$GOT expected=${p.sha256}"; rm -f bundle.tar.gz; exit ${EXIT_INTEGRITY}; fi`,
    'tar -xzf bundle.tar.gz && rm -f bundle.tar.gz || exit 1',
    'NODE=""',
    'if [ -x "$DIR/node/bin/node" ]; then NODE="$DIR/node/bin/node"; fi',
    'if [ -z "$NODE" ]; then NODE="$(command -v node || true)"; fi',
    'if [ -z "$NODE" ]; then (dnf install -y -q nodejs22 || dnf install -y -q nodejs20 || (apt-get update -qq && apt-get install -y -qq nodejs)) >/dev/null 2>&1; NODE="$(command -v node || command -v node-22 || command -v node-20 || true)"; fi',
    `if [ -z "$NODE" ]; then echo "TENDER_NO_NODE: put Node.js >= 20 in the AMI or in the bundle (docs/aws.md)"; exit ${EXIT_NO_NODE}; fi`,
    `systemd-run --unit ${p.unit} --collect --property=Restart=no --property=StandardOutput=journal ${envArgs} "$NODE" "$DIR/tender-aws-worker.cjs" || exit 1`,
    `echo "TENDER_INSTALLED $GOT"`,
  ].join('\n');
}

const DEPLOY_FIX =
  'the deploy-worker role needs ec2:RunInstances (instance, volume, network-interface with Tender tags; subnet, security-group, image), ec2:CreateTags on launch, and iam:PassRole on the worker role';

export function createEc2Workers(opts: Ec2WorkersOptions): Ec2Workers {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger;
  const pollMs = opts.pollMs ?? 3000;
  const preflightMode = opts.preflight ?? 'enforce';
  const preflightCache = new Map<string, number>();
  const presign =
    opts.presign ?? ((s3: S3Client, bucket: string, key: string, expiresIn: number) => getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn }));
  const ec2 = (r: string) => opts.clients.ec2(r);
  const ssm = (r: string) => opts.clients.ssm(r);

  async function runWorkers(region: string, runId: string, vmId: string, states = ['pending', 'running', 'stopping', 'stopped', 'shutting-down']): Promise<Instance[]> {
    const res = await awsCall(`ec2:DescribeInstances (worker of ${runId}/${vmId}) in ${region}`, () =>
      ec2(region).send(
        new DescribeInstancesCommand({
          Filters: [
            { Name: `tag:${TAG.run}`, Values: [runId] },
            { Name: `tag:${TAG.vm}`, Values: [vmId] },
            { Name: `tag:${TAG.role}`, Values: [WORKER_ROLE_VALUE] },
            { Name: 'instance-state-name', Values: states },
          ],
        }),
      ),
    );
    return (res.Reservations ?? []).flatMap((r) => r.Instances ?? []);
  }

  async function describeOne(ref: WorkerRef): Promise<Instance | undefined> {
    try {
      const res = await ec2(ref.region).send(new DescribeInstancesCommand({ InstanceIds: [ref.workerId] }));
      return res.Reservations?.[0]?.Instances?.[0];
    } catch (e) {
      if (isAwsNotFound(e)) return undefined;
      throw normaliseAwsError(e, `ec2:DescribeInstances ${ref.workerId}`);
    }
  }

  async function preflight(req: DeployWorkerRequest, region: string): Promise<void> {
    if (!req.privateNetwork || preflightMode === 'off' || !opts.readNetwork) return;
    const p = req.placement!;
    const key = `${region}|${p.subnet}|${p.securityGroups.join(',')}|${p.network ?? ''}`;
    if ((preflightCache.get(key) ?? 0) > clock.now().getTime()) return;
    const model = await opts.readNetwork(region);
    // A KMS key that wraps the repository key is called by the worker itself: its endpoint too.
    const services = requiredAwsServices({ kms: workerCallsKms(req.repositoryKey) });
    const findings = checkAwsNetwork(model, {
      region,
      workerSubnetId: p.subnet,
      workerSecurityGroupIds: p.securityGroups,
      workerVpcId: p.network,
      repositoryVpcIds: opts.repositoryVpcIds?.length ? opts.repositoryVpcIds : undefined,
      services,
    });
    const failed = findings.filter((f) => f.status === 'fail');
    if (failed.length > 0) {
      const text = failed.map((f) => `${f.check}: ${f.message}${f.fix ? ` (fix: ${f.fix})` : ''}`).join('; ');
      if (preflightMode === 'enforce') {
        throw new NetworkPreflightError(`a private worker in ${region} subnet ${p.subnet} would be missing: ${failedChecks(findings).join(', ')} — ${text}. Run \`tender check-network aws\` for the full report`);
      }
      logger.warn('private-network preflight failed; deploying anyway (TENDER_NETWORK_PREFLIGHT=warn)', { region, subnet: p.subnet, failed: failedChecks(findings) });
      return;
    }
    preflightCache.set(key, clock.now().getTime() + 10 * 60_000);
  }

  async function queuesOf(runId: string, vmId: string, region: string): Promise<RunQueues> {
    return ensureQueues(opts.clients.sqs(region), opts.namePrefix, runId, vmId, {});
  }

  async function waitForCommand(region: string, commandId: string, instanceId: string, what: string) {
    const deadline = clock.now().getTime() + (opts.installTimeoutMs ?? 600_000);
    for (;;) {
      try {
        const inv = await ssm(region).send(new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }));
        const status = inv.Status ?? 'Pending';
        if (!['Pending', 'InProgress', 'Delayed'].includes(status)) return inv;
      } catch (e) {
        // Right after SendCommand the invocation may not be visible yet.
        if (awsErrorName(e) !== 'InvocationDoesNotExist') throw normaliseAwsError(e, `ssm:GetCommandInvocation ${commandId}`, 'the install-worker role needs ssm:GetCommandInvocation');
      }
      if (clock.now().getTime() >= deadline) {
        throw new WorkerFailedError(`${what}: SSM command ${commandId} on ${instanceId} did not finish within ${Math.round((opts.installTimeoutMs ?? 600_000) / 1000)}s — see the command's output in Systems Manager → Run Command`);
      }
      await clock.sleep(pollMs);
    }
  }

  const workers: Ec2Workers = {
    queuesOf,

    async deployWorker(req: DeployWorkerRequest): Promise<WorkerRef> {
      const region = req.vm.region;
      const existing = await runWorkers(region, req.runId, req.vm.vmId, ['pending', 'running']);
      if (existing[0]?.InstanceId) return { workerId: existing[0].InstanceId, region };
      if (!req.placement) {
        throw new ConfigError(`no worker placement for Region ${region}: add worker.placement.${region} (subnet, securityGroups) to the policy — workers are never started in a default VPC`);
      }
      await preflight(req, region);
      const imageId = await resolveWorkerAmi({ ssm: ssm(region), region, instanceType: req.profile.instanceType, os: opts.os, override: opts.amiOverride });
      const tags = { Name: `${opts.namePrefix}-worker-${req.vm.vmId}`, ...req.tags, [TAG.role]: WORKER_ROLE_VALUE, [TAG.run]: req.runId, [TAG.vm]: req.vm.vmId };
      const profile = opts.instanceProfile.startsWith('arn:') ? { Arn: opts.instanceProfile } : { Name: opts.instanceProfile };
      const lifetimeMin = Math.round((opts.maxLifetimeHours ?? 26) * 60);
      // A safety net, not the mechanism: deallocate terminates the worker; this only ends one the pipeline lost.
      const userData = `#!/bin/bash\nshutdown -h +${lifetimeMin} "Tender worker lifetime reached"\n`;
      const res = await awsCall(
        `ec2:RunInstances (${req.profile.instanceType}) for VM ${req.vm.vmId} in ${region}`,
        () =>
          ec2(region).send(
            new RunInstancesCommand({
              ClientToken: clientTokenOf(req.runId, req.vm.vmId),
              ImageId: imageId,
              InstanceType: req.profile.instanceType as any,
              MinCount: 1,
              MaxCount: 1,
              IamInstanceProfile: profile,
              NetworkInterfaces: [
                {
                  DeviceIndex: 0,
                  SubnetId: req.placement!.subnet,
                  ...(req.placement!.securityGroups.length ? { Groups: req.placement!.securityGroups } : {}),
                  AssociatePublicIpAddress: !req.privateNetwork,
                  DeleteOnTermination: true,
                },
              ],
              MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 1 },
              InstanceInitiatedShutdownBehavior: 'terminate',
              UserData: Buffer.from(userData).toString('base64'),
              TagSpecifications: [
                { ResourceType: 'instance', Tags: toAwsTags(tags) },
                { ResourceType: 'volume', Tags: toAwsTags(tags) },
                { ResourceType: 'network-interface', Tags: toAwsTags(tags) },
              ],
            }),
          ),
        DEPLOY_FIX,
      );
      const inst = res.Instances?.[0];
      if (!inst?.InstanceId) throw new WorkerFailedError(`ec2:RunInstances for VM ${req.vm.vmId} returned no instance`);
      if (res.OwnerId) {
        await updateGrants(opts.configBucket, req.runId, req.vm.vmId, (g) => {
          g.region = region;
          g.workerArn = instanceArn(region, res.OwnerId!, inst.InstanceId!);
        });
      }
      logger.info('worker instance started', { runId: req.runId, vmId: req.vm.vmId, workerId: inst.InstanceId, imageId, instanceType: req.profile.instanceType });
      return { workerId: inst.InstanceId, region };
    },

    async getWorkerState(ref: WorkerRef): Promise<WorkerState> {
      const inst = await describeOne(ref);
      const state = inst?.State?.Name;
      if (!inst || state === 'terminated' || state === 'shutting-down') return 'gone';
      if (state === 'stopping' || state === 'stopped') return 'failed';
      if (state !== 'running') return 'starting';
      const info = await awsCall(`ssm:DescribeInstanceInformation ${ref.workerId}`, () =>
        ssm(ref.region).send(new DescribeInstanceInformationCommand({ Filters: [{ Key: 'InstanceIds', Values: [ref.workerId] }] })),
      );
      return info.InstanceInformationList?.[0]?.PingStatus === 'Online' ? 'ready' : 'starting';
    },

    async installWorker({ runId, vmId, worker }): Promise<{ bundleSha256: string }> {
      const { region, workerId } = worker;
      const inst = await describeOne(worker);
      if (!inst || inst.State?.Name !== 'running') throw new WorkerFailedError(`worker ${workerId} is ${inst?.State?.Name ?? 'gone'}: it cannot install its software — run again`);
      const manifest = await opts.configBucket.getJson<BundleManifest>(BUNDLE_MANIFEST_KEY);
      if (!manifest?.sha256 || !manifest.key) {
        throw new ConfigError(`s3://${opts.configBucket.bucket}/${BUNDLE_MANIFEST_KEY} is missing: build and upload the worker bundle (docs/aws.md, "Worker bundle")`);
      }
      if (fromAwsTags(inst.Tags)[TAG.installed] === manifest.sha256) return { bundleSha256: manifest.sha256 };

      const queues = await queuesOf(runId, vmId, region);
      const keys = runKeys(runId, vmId);
      const stagedKey = `${keys.staging}tender-worker.tar.gz`;
      await updateGrants(opts.configBucket, runId, vmId, (g) => {
        g.region = region;
        if (!g.staged.includes(stagedKey)) g.staged.push(stagedKey);
        g.queues = queues;
      });
      await opts.configBucket.copy(manifest.key, stagedKey);
      const url = await presign(opts.s3, opts.configBucket.bucket, stagedKey, opts.bundleUrlTtlSeconds ?? 300);
      const unit = `tender-agent-${hashOf(runId, vmId).slice(0, 12)}`;
      const comment = `tender install ${hashOf(runId, vmId).slice(0, 16)}`;

      // A command an earlier attempt sent and that still runs is waited on, not sent again.
      const earlier = await awsCall(`ssm:ListCommandInvocations ${workerId}`, () => ssm(region).send(new ListCommandInvocationsCommand({ InstanceId: workerId, MaxResults: 50 })));
      let commandId = earlier.CommandInvocations?.find((c) => c.Comment === comment && ['Pending', 'InProgress', 'Delayed'].includes(c.Status ?? ''))?.CommandId;
      if (!commandId) {
        try {
          const sent = await ssm(region).send(
            new SendCommandCommand({
              InstanceIds: [workerId],
              DocumentName: 'AWS-RunShellScript',
              Comment: comment,
              TimeoutSeconds: 600,
              Parameters: {
                commands: [
                  installScript({
                    url,
                    sha256: manifest.sha256,
                    dir: `/opt/tender/${safeId(`${runId}-${vmId}`).slice(0, 100)}`,
                    unit,
                    env: { AWS_REGION: region, TENDER_JOB_QUEUE_URL: queues.jobUrl, TENDER_STATUS_QUEUE_URL: queues.statusUrl, TENDER_WORKER_ID: workerId },
                  }),
                ],
                executionTimeout: ['600'],
              },
            }),
          );
          commandId = sent.Command?.CommandId;
        } catch (e) {
          const name = awsErrorName(e);
          if (name === 'InvalidInstanceId' || name === 'Undeliverable') {
            throw new NotReadyError(`worker ${workerId} is not yet reachable through SSM (${name}) — retried; if it persists, check the ssm/ssmmessages/ec2messages endpoints and the worker role`, { cause: e });
          }
          throw normaliseAwsError(e, `ssm:SendCommand AWS-RunShellScript to ${workerId}`, 'the install-worker role needs ssm:SendCommand on the AWS-RunShellScript document and on instances tagged tender:role=worker');
        }
      }
      if (!commandId) throw new WorkerFailedError(`ssm:SendCommand to ${workerId} returned no command id`);
      const inv = await waitForCommand(region, commandId, workerId, `installing the worker software on ${workerId}`);
      const out = inv.StandardOutputContent ?? '';
      const err = (inv.StandardErrorContent ?? '').trim().split('\n').slice(-5).join(' | ');
      if (inv.Status === 'Success') {
        await awsCall(`ec2:CreateTags ${workerId}`, () => ec2(region).send(new CreateTagsCommand({ Resources: [workerId], Tags: [{ Key: TAG.installed, Value: manifest.sha256 }] })));
        return { bundleSha256: manifest.sha256 };
      }
      const code = inv.ResponseCode;
      if (code === EXIT_INTEGRITY || /TENDER_BUNDLE_INTEGRITY/.test(out)) {
        const got = /got=([0-9a-f]{64})/.exec(out)?.[1] ?? 'unknown';
        throw new BundleIntegrityError(`worker ${workerId} refused its bundle: its sha256 is ${got}, expected ${manifest.sha256}; it was not run — re-upload the bundle and its manifest together (docs/aws.md) and run again`);
      }
      if (code === EXIT_DOWNLOAD || /TENDER_BUNDLE_DOWNLOAD_FAILED/.test(out)) {
        throw new BundleIntegrityError(`worker ${workerId} could not download its bundle from the config bucket (${err || 'curl failed'}) — in private mode the subnet needs an S3 interface endpoint with private DNS; check \`tender check-network aws\``);
      }
      if (code === EXIT_NO_NODE) throw new WorkerFailedError(`worker ${workerId} has no Node.js and could not install it — use an AMI with Node.js ≥ 20 (TENDER_WORKER_AMI) or build the bundle with --node-dir (docs/aws.md)`);
      throw new WorkerFailedError(`installing the worker software on ${workerId} ended ${inv.Status}${code !== undefined && code >= 0 ? ` (exit ${code})` : ''}: ${err || out.trim().split('\n').slice(-3).join(' | ') || 'no output'} — see Systems Manager → Run Command ${commandId}`);
    },

    async deallocateWorker({ runId, vmId, worker }): Promise<void> {
      // Without a ref (the deploy's result never reached the state machine), look wherever it may be.
      const recorded = (await opts.configBucket.getJson<{ region?: string }>(runKeys(runId, vmId).grants))?.region;
      const regions = worker ? [worker.region] : [...new Set([recorded, ...opts.regions].filter((x): x is string => !!x))];
      for (const region of regions) {
        const ids = new Set<string>((await runWorkers(region, runId, vmId)).map((i) => i.InstanceId!));
        if (worker) ids.add(worker.workerId);
        if (ids.size === 0) continue;
        for (const id of ids) {
          try {
            await ec2(region).send(new TerminateInstancesCommand({ InstanceIds: [id] }));
          } catch (e) {
            if (isAwsNotFound(e)) continue;
            throw normaliseAwsError(e, `ec2:TerminateInstances ${id}`, 'the role needs ec2:TerminateInstances on instances tagged tender:role=worker');
          }
        }
        const deadline = clock.now().getTime() + (opts.terminateWaitMs ?? 300_000);
        for (;;) {
          const left: string[] = [];
          for (const id of ids) {
            const inst = await describeOne({ workerId: id, region });
            if (inst && inst.State?.Name !== 'terminated') left.push(`${id} (${inst.State?.Name})`);
          }
          if (left.length === 0) break;
          if (clock.now().getTime() >= deadline) throw new NotReadyError(`worker ${left.join(', ')} is still shutting down — retried until it is terminated`);
          await clock.sleep(pollMs);
        }
      }
    },
  };
  return workers;
}
