// What a Tender worker without a public IP needs from an AWS network, checked
// over the normalised model before any worker starts. A missing piece would
// otherwise show up as a hung install or a backup that times out.
//
// A check that depends on a piece another check found missing does not report
// it again (no endpoint → no private-DNS or security-group finding for it), so
// each failure points at one thing to fix.

import type { Placement } from '../config.js';
import { cidrContains, cidrsOverlap, isCidr, prefixLength } from './cidr.js';
import type {
  AwsNetworkModel,
  AwsPeering,
  AwsRouteTable,
  AwsSecurityGroup,
  AwsSgRule,
  AwsSubnet,
  AwsVpcEndpoint,
  Finding,
} from './types.js';

/** An AWS service a private worker reaches through an interface endpoint, and why. */
export interface AwsWorkerService {
  service: string;
  reason: string;
}

/** Always needed, whatever the policy. */
export const AWS_WORKER_SERVICES: readonly AwsWorkerService[] = [
  { service: 'ssm', reason: 'the worker registers with Systems Manager; Run Command installs and starts the worker bundle' },
  { service: 'ssmmessages', reason: 'the SSM agent’s control channel for Run Command' },
  { service: 'ec2messages', reason: 'the SSM agent receives commands and returns their output through it' },
  { service: 'ebs', reason: 'EBS direct APIs: the worker reads snapshot blocks (ListChangedBlocks, GetSnapshotBlock)' },
  { service: 'sqs', reason: 'the worker reports progress and its result on the run’s queue' },
  { service: 'sts', reason: 'regional STS: the SDK on the worker resolves and assumes its role (AssumeRole, GetCallerIdentity)' },
];

export const AWS_KMS_SERVICE: AwsWorkerService = {
  service: 'kms',
  reason: 'the repository key is a KMS key: the worker decrypts the repository data key with it',
};

/**
 * Whether a worker calls KMS itself for this repository key: only when the KMS key wraps the
 * repository's master key ({ kmsKeyId } alone). A passphrase in SSM (a SecureString, or a Secrets
 * Manager secret through SSM's /aws/reference/secretsmanager/ bridge) is read with one SSM call;
 * SSM decrypts it and reads Secrets Manager itself, so the worker needs neither endpoint.
 */
export function workerCallsKms(key: Record<string, unknown> | undefined): boolean {
  return typeof key?.kmsKeyId === 'string' && key.passphraseSecretArn === undefined;
}

/** The services a private worker needs for a repository key of this kind. */
export function requiredAwsServices(opts: { kms?: boolean; extra?: string[] } = {}): AwsWorkerService[] {
  const list = [...AWS_WORKER_SERVICES];
  if (opts.kms) list.push(AWS_KMS_SERVICE);
  for (const s of opts.extra ?? []) {
    if (s !== 's3' && !list.some((x) => x.service === s)) list.push({ service: s, reason: 'asked for with --service' });
  }
  return list;
}

export interface AwsCheckInput {
  /** The region the worker runs in. */
  region: string;
  workerSubnetId: string;
  /** Empty: the worker gets its VPC's default security group, so that one is checked. */
  workerSecurityGroupIds: string[];
  /** When given (placement.network), the worker subnet must be in this VPC. */
  workerVpcId?: string;
  /**
   * VPCs whose S3 interface endpoint serves the repository (seed 002: the repository account's
   * VPC, reached through peering). Empty: the S3 interface endpoint must be in the worker VPC.
   */
  repositoryVpcIds?: string[];
  /** Who else reaches the S3 endpoint (an appliance, an operator host): needs 443 inbound there too. */
  applianceCidr?: string;
  /** Services needing an interface endpoint; default requiredAwsServices() (no KMS). */
  services?: AwsWorkerService[];
}

const FINAL_PEERING_STATES = new Set(['deleted', 'deleting', 'rejected', 'failed', 'expired']);

function finding(check: string, status: Finding['status'], resource: string, message: string, fix: string | null = null): Finding {
  return { check, status, resource, message, fix };
}

function ruleAllows443(rule: AwsSgRule): boolean {
  const p = rule.protocol.toLowerCase();
  if (p === '-1' || p === 'all') return true;
  if (p !== 'tcp' && p !== '6') return false;
  const from = rule.fromPort ?? 0;
  const to = rule.toPort ?? 65535;
  return from <= 443 && 443 <= to;
}

function regionOfAz(az: string | undefined): string | undefined {
  return az ? /^([a-z]{2}(?:-gov)?-[a-z]+-\d+)/.exec(az)?.[1] : undefined;
}

/** Lookups over the model that every check shares. */
class AwsView {
  constructor(readonly m: AwsNetworkModel) {}

  subnet(id: string): AwsSubnet | undefined {
    return this.m.subnets.find((s) => s.subnetId === id);
  }
  sg(id: string): AwsSecurityGroup | undefined {
    return this.m.securityGroups.find((g) => g.groupId === id);
  }
  vpcKnown(vpcId: string): boolean {
    return this.m.vpcs.some((v) => v.vpcId === vpcId) || this.m.peerings.some((p) => p.requester.vpcId === vpcId || p.accepter.vpcId === vpcId);
  }
  /** CIDRs of a VPC: describe-vpcs first, else what a peering connection says about it. */
  vpcCidrs(vpcId: string): string[] {
    const vpc = this.m.vpcs.find((v) => v.vpcId === vpcId);
    if (vpc && vpc.cidrs.length) return vpc.cidrs;
    for (const p of this.m.peerings) {
      for (const side of [p.requester, p.accepter]) if (side.vpcId === vpcId && side.cidrs.length) return side.cidrs;
    }
    return [];
  }
  vpcOwner(vpcId: string): string | undefined {
    const vpc = this.m.vpcs.find((v) => v.vpcId === vpcId);
    if (vpc?.ownerId) return vpc.ownerId;
    for (const p of this.m.peerings) for (const side of [p.requester, p.accepter]) if (side.vpcId === vpcId && side.ownerId) return side.ownerId;
    return undefined;
  }
  vpcRegion(vpcId: string): string | undefined {
    const vpc = this.m.vpcs.find((v) => v.vpcId === vpcId);
    if (vpc?.region) return vpc.region;
    for (const p of this.m.peerings) for (const side of [p.requester, p.accepter]) if (side.vpcId === vpcId && side.region) return side.region;
    for (const s of this.m.subnets) if (s.vpcId === vpcId) {
      const r = regionOfAz(s.availabilityZone);
      if (r) return r;
    }
    return undefined;
  }
  subnetsOf(vpcId: string): AwsSubnet[] {
    return this.m.subnets.filter((s) => s.vpcId === vpcId);
  }
  /** The table a subnet actually uses: its explicit association, else its VPC's main table. */
  routeTableFor(subnetId: string, vpcId: string): AwsRouteTable | undefined {
    return (
      this.m.routeTables.find((t) => t.subnetIds.includes(subnetId)) ??
      this.m.routeTables.find((t) => t.vpcId === vpcId && t.main)
    );
  }
  peeringsBetween(a: string, b: string): AwsPeering[] {
    return this.m.peerings.filter(
      (p) => (p.requester.vpcId === a && p.accepter.vpcId === b) || (p.requester.vpcId === b && p.accepter.vpcId === a),
    );
  }
}

/** Where traffic to `destination` goes from this table (longest prefix wins). */
function routeFor(table: AwsRouteTable, destination: string) {
  let best: AwsRouteTable['routes'][number] | undefined;
  for (const r of table.routes) {
    if (!cidrContains(r.destination, destination)) continue;
    if (!best || prefixLength(r.destination) > prefixLength(best.destination)) best = r;
  }
  return best;
}

/** "sends 11.0.1.0/24 to nat-…" / "has no route for 11.0.1.0/24". */
function describeRoute(dest: string, r: { target: string; state: string } | undefined): string {
  if (!r) return `has no route for ${dest}`;
  return `sends ${dest} to ${r.target || 'an unknown target'}${r.state && r.state !== 'active' ? ` (${r.state})` : ''}`;
}

function ipPermission(cidr: string): string {
  return `IpProtocol=tcp,FromPort=443,ToPort=443,IpRanges=[{CidrIp=${cidr},Description=tender-worker-https}]`;
}

/**
 * Runs every AWS private-network check. Pure: the same model and input give
 * the same findings, in a stable order.
 */
export function checkAwsNetwork(model: AwsNetworkModel, input: AwsCheckInput): Finding[] {
  const v = new AwsView(model);
  const out: Finding[] = [];
  const region = input.region;

  // ---- placement: without a worker subnet and its security groups nothing else can be judged
  const subnet = v.subnet(input.workerSubnetId);
  if (!subnet) {
    return [finding('placement', 'fail', input.workerSubnetId,
      `worker subnet ${input.workerSubnetId} is not in the network data (describe-subnets)`,
      `check the subnet id in --worker-subnet / worker.placement.${region}.subnet, or describe the account and region it lives in`)];
  }
  const workerVpcId = subnet.vpcId;
  const placementProblems: Finding[] = [];
  if (input.workerVpcId && input.workerVpcId !== workerVpcId) {
    placementProblems.push(finding('placement', 'fail', subnet.subnetId,
      `worker subnet ${subnet.subnetId} is in ${workerVpcId}, not in ${input.workerVpcId} as the placement says`,
      `set worker.placement.${region}.network to ${workerVpcId}, or pick a subnet of ${input.workerVpcId}`));
  }
  let workerSgs: AwsSecurityGroup[] = [];
  if (input.workerSecurityGroupIds.length === 0) {
    const def = model.securityGroups.find((g) => g.vpcId === workerVpcId && g.groupName === 'default');
    if (def) workerSgs = [def];
    else placementProblems.push(finding('placement', 'fail', workerVpcId,
      `no worker security group given and the default security group of ${workerVpcId} is not in the data`,
      `name the worker's security group with --worker-security-group / worker.placement.${region}.securityGroups`));
  }
  for (const id of input.workerSecurityGroupIds) {
    const g = v.sg(id);
    if (!g) placementProblems.push(finding('placement', 'fail', id, `worker security group ${id} is not in the network data (describe-security-groups)`,
      `check the id in --worker-security-group / worker.placement.${region}.securityGroups`));
    else if (g.vpcId && g.vpcId !== workerVpcId) placementProblems.push(finding('placement', 'fail', id,
      `worker security group ${id} belongs to ${g.vpcId}, not to the worker subnet's VPC ${workerVpcId}`,
      `use a security group of ${workerVpcId}`));
    else workerSgs.push(g);
  }
  const repoVpcIds: string[] = [];
  for (const id of [...new Set(input.repositoryVpcIds ?? [])]) {
    if (id === workerVpcId) repoVpcIds.push(id);
    else if (!v.vpcKnown(id)) placementProblems.push(finding('placement', 'fail', id,
      `repository VPC ${id} is in neither describe-vpcs nor any peering connection`,
      `check --repository-vpc, or add the repository account's describe-vpcs output to the file`));
    else repoVpcIds.push(id);
  }
  if (input.applianceCidr && !isCidr(input.applianceCidr)) placementProblems.push(finding('placement', 'fail', input.applianceCidr,
    `appliance CIDR "${input.applianceCidr}" is not an IPv4 CIDR`, 'give it as a.b.c.d/n, e.g. 203.0.113.10/32'));
  if (placementProblems.length) out.push(...placementProblems);
  else out.push(finding('placement', 'pass', subnet.subnetId,
    `worker subnet ${subnet.subnetId} (${subnet.cidr}${subnet.availabilityZone ? `, ${subnet.availabilityZone}` : ''}) in ${workerVpcId}; security groups ${workerSgs.map((g) => g.groupId).join(', ')}`));
  const workerSgIds = workerSgs.map((g) => g.groupId);
  const sgHint = (eps: AwsVpcEndpoint[]) => eps.flatMap((e) => e.groupIds)[0] ?? 'sg-<endpoint-security-group>';

  // ---- endpoint.<service>: an available interface endpoint in the worker VPC
  const services = input.services ?? requiredAwsServices();
  const serviceEndpoints: AwsVpcEndpoint[] = [];
  const workerVpcEndpoints = model.endpoints.filter((e) => e.vpcId === workerVpcId);
  for (const { service, reason } of services) {
    const name = `com.amazonaws.${region}.${service}`;
    const check = `endpoint.${service}`;
    const create = `aws ec2 create-vpc-endpoint --region ${region} --vpc-id ${workerVpcId} --vpc-endpoint-type Interface --service-name ${name} --subnet-ids ${subnet.subnetId} --security-group-ids ${sgHint(workerVpcEndpoints)} --private-dns-enabled`;
    const iface = workerVpcEndpoints.filter((e) => e.serviceName === name && e.type.toLowerCase() === 'interface');
    if (iface.length === 0) {
      const elsewhere = model.endpoints.find((e) => e.serviceName === name && e.type.toLowerCase() === 'interface');
      const gateway = workerVpcEndpoints.find((e) => e.serviceName === name);
      const why = gateway ? ` (only a ${gateway.type} endpoint, ${gateway.endpointId})` : elsewhere ? ` (only one in ${elsewhere.vpcId}, ${elsewhere.endpointId}, which the worker's VPC does not use)` : '';
      out.push(finding(check, 'fail', workerVpcId, `no interface endpoint for ${name} in ${workerVpcId}${why}; needed because ${reason}`, create));
      continue;
    }
    const available = iface.filter((e) => e.state === 'available');
    if (available.length === 0) {
      const e = iface[0]!;
      serviceEndpoints.push(e);
      const fix = e.state === 'pendingacceptance'
        ? `accept the endpoint connection for ${e.endpointId} on the service side, or create a new one: ${create}`
        : e.state === 'pending' ? `wait until ${e.endpointId} is available, then run the check again` : `delete ${e.endpointId} and create it again: ${create}`;
      out.push(finding(check, 'fail', e.endpointId, `interface endpoint ${e.endpointId} for ${name} is ${e.state}, not available`, fix));
      continue;
    }
    const azOf = (id: string) => v.subnet(id)?.availabilityZone;
    const chosen = available.find((e) => e.subnetIds.includes(subnet.subnetId)) ??
      available.find((e) => subnet.availabilityZone && e.subnetIds.some((s) => azOf(s) === subnet.availabilityZone)) ?? available[0]!;
    serviceEndpoints.push(chosen);
    const knownAzs = chosen.subnetIds.map(azOf).filter((x): x is string => !!x);
    if (subnet.availabilityZone && knownAzs.length === chosen.subnetIds.length && !knownAzs.includes(subnet.availabilityZone)) {
      out.push(finding(check, 'warn', chosen.endpointId,
        `${chosen.endpointId} (${name}) has no network interface in ${subnet.availabilityZone}: the worker reaches it across zones (extra cost, lost if that zone fails)`,
        `aws ec2 modify-vpc-endpoint --region ${region} --vpc-endpoint-id ${chosen.endpointId} --add-subnet-ids ${subnet.subnetId}`));
    } else {
      out.push(finding(check, 'pass', chosen.endpointId, `${name} interface endpoint available in ${workerVpcId}, reachable from ${subnet.subnetId}`));
    }
  }

  // ---- endpoint.s3-interface: S3 through an interface endpoint in the repository VPC(s) or the worker VPC
  const s3Vpcs = repoVpcIds.length ? repoVpcIds : [workerVpcId];
  const s3Endpoints = new Map<string, AwsVpcEndpoint>();
  for (const vpcId of s3Vpcs) {
    const vpcRegion = v.vpcRegion(vpcId) ?? region;
    const s3Name = `com.amazonaws.${vpcRegion}.s3`;
    const inVpc = model.endpoints.filter((e) => e.vpcId === vpcId && /^com\.amazonaws\.[a-z0-9-]+\.s3$/.test(e.serviceName));
    const iface = inVpc.filter((e) => e.type.toLowerCase() === 'interface');
    const endpointSubnet = vpcId === workerVpcId ? subnet.subnetId : v.subnetsOf(vpcId)[0]?.subnetId ?? 'subnet-<repository-subnet>';
    const create = `aws ec2 create-vpc-endpoint --region ${vpcRegion} --vpc-id ${vpcId} --vpc-endpoint-type Interface --service-name ${s3Name} --subnet-ids ${endpointSubnet} --security-group-ids ${sgHint(model.endpoints.filter((e) => e.vpcId === vpcId))}`;
    if (iface.length === 0) {
      const gw = inVpc.find((e) => e.type.toLowerCase() === 'gateway');
      out.push(finding('endpoint.s3-interface', 'fail', gw?.endpointId ?? vpcId,
        gw
          ? `${vpcId} has only the S3 gateway endpoint ${gw.endpointId}: gateway endpoints are not supported in private mode — they cannot be reached through a peering connection and give the repository no endpoint DNS name for its URLs`
          : `no S3 interface endpoint in ${vpcId}: the worker reads and writes the repository and fetches its bundle through it`,
        create));
      continue;
    }
    const ok = iface.find((e) => e.state === 'available');
    s3Endpoints.set(vpcId, ok ?? iface[0]!);
    if (!ok) out.push(finding('endpoint.s3-interface', 'fail', iface[0]!.endpointId, `S3 interface endpoint ${iface[0]!.endpointId} in ${vpcId} is ${iface[0]!.state}, not available`,
      iface[0]!.state === 'pending' ? `wait until ${iface[0]!.endpointId} is available` : `delete ${iface[0]!.endpointId} and create it again: ${create}`));
    else out.push(finding('endpoint.s3-interface', 'pass', ok.endpointId, `${ok.serviceName} interface endpoint available in ${vpcId}`));
  }

  // ---- endpoint.private-dns: the service endpoints resolve under the services' own names
  for (const e of serviceEndpoints) {
    if (e.privateDnsEnabled) out.push(finding('endpoint.private-dns', 'pass', e.endpointId, `private DNS enabled for ${e.serviceName}`));
    else out.push(finding('endpoint.private-dns', 'fail', e.endpointId,
      `private DNS is off for ${e.endpointId} (${e.serviceName}): the SDK and the SSM agent on the worker resolve the public name and time out`,
      `aws ec2 modify-vpc-endpoint --region ${region} --vpc-endpoint-id ${e.endpointId} --private-dns-enabled (the VPC needs enableDnsSupport and enableDnsHostnames)`));
  }

  // ---- sg.endpoint-ingress-443: each endpoint's groups let the worker (and the appliance, for S3) in on 443
  const ingressChecks: Array<{ e: AwsVpcEndpoint; sources: Array<{ cidr: string; who: string }> }> = [
    ...serviceEndpoints.map((e) => ({ e, sources: [{ cidr: subnet.cidr, who: 'worker subnet' }] })),
    ...[...s3Endpoints.values()].map((e) => ({
      e,
      sources: [{ cidr: subnet.cidr, who: 'worker subnet' }, ...(input.applianceCidr && isCidr(input.applianceCidr) ? [{ cidr: input.applianceCidr, who: 'appliance' }] : [])],
    })),
  ];
  // Endpoints sharing security groups and the same verdict make one finding: one rule fixes them all.
  const shortName = (e: AwsVpcEndpoint) => `${e.endpointId} (${e.serviceName.replace(/^com\.amazonaws\.[a-z0-9-]+\./, '')})`;
  const grouped = new Map<string, { status: Finding['status']; resource: string; eps: AwsVpcEndpoint[]; text: (names: string) => string; fix: string | null }>();
  for (const { e, sources } of ingressChecks) {
    const groups = e.groupIds.map((id) => v.sg(id));
    const unknown = e.groupIds.filter((_, i) => !groups[i]);
    const rules = groups.flatMap((g) => g?.ingress ?? []);
    const missing = sources.filter(({ cidr, who }) =>
      !rules.some((r) => ruleAllows443(r) && (r.cidrs.some((c) => cidrContains(c, cidr)) || (who === 'worker subnet' && r.groupIds.some((id) => workerSgIds.includes(id))))));
    const sgs = e.groupIds.join(', ');
    let entry: { status: Finding['status']; resource: string; text: (names: string) => string; fix: string | null };
    if (e.groupIds.length === 0) {
      entry = { status: 'fail', resource: e.endpointId, text: (n) => `${n} has no security group`,
        fix: `aws ec2 modify-vpc-endpoint --vpc-endpoint-id ${e.endpointId} --add-security-group-ids <a group allowing tcp/443 from ${sources.map((s) => s.cidr).join(', ')}>` };
    } else if (missing.length === 0) {
      entry = { status: 'pass', resource: sgs, text: (n) => `${sgs} allow tcp/443 from ${sources.map((s) => `${s.who} ${s.cidr}`).join(' and ')} to ${n}`, fix: null };
    } else if (unknown.length === e.groupIds.length) {
      entry = { status: 'warn', resource: sgs, text: (n) => `the security groups ${sgs} of ${n} are not in the data, so their rules cannot be checked`,
        fix: `add that account's describe-security-groups output to the file, or run the check there` };
    } else {
      const target = e.groupIds.find((id) => v.sg(id)) ?? e.groupIds[0]!;
      entry = { status: 'fail', resource: sgs,
        text: (n) => `security groups ${sgs} of ${n} do not allow tcp/443 from ${missing.map((s) => `${s.who} ${s.cidr}`).join(', ')}`,
        fix: missing.map((s) => `aws ec2 authorize-security-group-ingress --group-id ${target} --ip-permissions ${ipPermission(s.cidr)}`).join(' ; ') };
    }
    const key = `${entry.status}|${entry.resource}|${entry.fix ?? ''}|${sources.map((s) => s.cidr).join()}`;
    const prev = grouped.get(key);
    if (prev) prev.eps.push(e);
    else grouped.set(key, { ...entry, eps: [e] });
  }
  for (const g of grouped.values()) {
    out.push(finding('sg.endpoint-ingress-443', g.status, g.resource, g.text(g.eps.map(shortName).join(', ')), g.fix));
  }

  // ---- sg.worker-egress-443: the worker's groups let it out to every endpoint on 443
  if (workerSgs.length) {
    const egress = workerSgs.flatMap((g) => g.egress);
    const missing: Array<{ cidr: string; what: string }> = [];
    const seen = new Set<string>();
    for (const { e } of ingressChecks) {
      const dests = e.subnetIds.map((id) => v.subnet(id)?.cidr).filter((c): c is string => !!c);
      const targets = dests.length ? dests : v.vpcCidrs(e.vpcId);
      for (const cidr of targets) {
        const ok = egress.some((r) => ruleAllows443(r) && (r.cidrs.some((c) => cidrContains(c, cidr)) || r.groupIds.some((id) => e.groupIds.includes(id))));
        if (!ok && !seen.has(cidr)) {
          seen.add(cidr);
          missing.push({ cidr, what: shortName(e) });
        }
      }
    }
    const resource = workerSgIds.join(', ');
    if (missing.length === 0) out.push(finding('sg.worker-egress-443', 'pass', resource, `the worker's security groups allow tcp/443 out to every endpoint`));
    else out.push(finding('sg.worker-egress-443', 'fail', resource,
      `the worker's security groups allow no tcp/443 out to ${missing.map((m) => `${m.cidr} (${m.what})`).join(', ')}`,
      missing.map((m) => `aws ec2 authorize-security-group-egress --group-id ${workerSgIds[0]} --ip-permissions ${ipPermission(m.cidr)}`).join(' ; ')));
  }

  // ---- peering, routes and CIDRs towards each repository VPC other than the worker's
  const workerCidrs = v.vpcCidrs(workerVpcId).length ? v.vpcCidrs(workerVpcId) : [subnet.cidr];
  for (const repoVpcId of repoVpcIds.filter((id) => id !== workerVpcId)) {
    const repoCidrs = v.vpcCidrs(repoVpcId);
    const repoRegion = v.vpcRegion(repoVpcId) ?? region;
    const peerings = v.peeringsBetween(workerVpcId, repoVpcId);
    const active = peerings.find((p) => p.status === 'active');
    const live = active ?? peerings.find((p) => !FINAL_PEERING_STATES.has(p.status));

    // peering.active
    if (active) out.push(finding('peering.active', 'pass', active.peeringId, `${active.peeringId} between ${workerVpcId} and ${repoVpcId} is active`));
    else if (live) {
      const accepterRegion = live.accepter.region ?? repoRegion;
      out.push(finding('peering.active', 'fail', live.peeringId, `${live.peeringId} between ${workerVpcId} and ${repoVpcId} is ${live.status}, not active`,
        live.status === 'pending-acceptance'
          ? `in account ${live.accepter.ownerId ?? 'of ' + live.accepter.vpcId}: aws ec2 accept-vpc-peering-connection --region ${accepterRegion} --vpc-peering-connection-id ${live.peeringId}`
          : `wait until ${live.peeringId} is active, then run the check again`));
    } else {
      const owner = v.vpcOwner(repoVpcId);
      out.push(finding('peering.active', 'fail', repoVpcId,
        `no active peering connection between worker VPC ${workerVpcId} and repository VPC ${repoVpcId}${peerings.length ? ` (${peerings.map((p) => `${p.peeringId} ${p.status}`).join(', ')})` : ''}`,
        `aws ec2 create-vpc-peering-connection --region ${region} --vpc-id ${workerVpcId} --peer-vpc-id ${repoVpcId}${owner ? ` --peer-owner-id ${owner}` : ''} --peer-region ${repoRegion}, then accept it in the repository account: aws ec2 accept-vpc-peering-connection --region ${repoRegion} --vpc-peering-connection-id <pcx-id>`));
    }
    const pcx = live?.peeringId;
    const pcxArg = pcx ?? '<pcx-id of the peering>';
    const targetOk = (r: { target: string; state: string } | undefined) =>
      !!r && r.state === 'active' && (pcx ? r.target === pcx : r.target.startsWith('pcx-'));
    const routeFix = (table: AwsRouteTable, dest: string, current: ReturnType<typeof routeFor>, tableRegion: string) =>
      current && current.destination === dest
        ? `aws ec2 replace-route --region ${tableRegion} --route-table-id ${table.routeTableId} --destination-cidr-block ${dest} --vpc-peering-connection-id ${pcxArg}`
        : `aws ec2 create-route --region ${tableRegion} --route-table-id ${table.routeTableId} --destination-cidr-block ${dest} --vpc-peering-connection-id ${pcxArg}`;

    // route.worker-to-repository: the worker subnet's table sends the repository's endpoint subnets through the peering
    const s3e = s3Endpoints.get(repoVpcId);
    const s3Subnets = (s3e?.subnetIds ?? []).map((id) => v.subnet(id)?.cidr).filter((c): c is string => !!c);
    const repoDests = s3Subnets.length ? s3Subnets : repoCidrs;
    const workerTable = v.routeTableFor(subnet.subnetId, workerVpcId);
    if (!workerTable) {
      out.push(finding('route.worker-to-repository', 'warn', subnet.subnetId,
        `no route table of ${workerVpcId} (explicit for ${subnet.subnetId} or main) is in the data`, 'add describe-route-tables of the worker account'));
    } else {
      const bad = repoDests.map((d) => ({ d, r: routeFor(workerTable, d) })).filter(({ r }) => !targetOk(r));
      const how = workerTable.subnetIds.includes(subnet.subnetId) ? `associated with ${subnet.subnetId}` : `main table of ${workerVpcId}, used by ${subnet.subnetId}`;
      if (bad.length === 0) out.push(finding('route.worker-to-repository', 'pass', workerTable.routeTableId,
        `${workerTable.routeTableId} (${how}) routes ${repoDests.join(', ')} through ${pcx ?? 'a peering connection'}`));
      else {
        const dest = repoCidrs[0] ?? bad[0]!.d;
        const current = routeFor(workerTable, dest);
        out.push(finding('route.worker-to-repository', 'fail', workerTable.routeTableId,
          `${workerTable.routeTableId} (${how}) ${bad.map(({ d, r }) => describeRoute(d, r)).join(', ')}: traffic to repository VPC ${repoVpcId} must go through ${pcx ?? 'the peering connection'}`,
          routeFix(workerTable, dest, current, region)));
      }
    }

    // route.repository-to-worker: the tables the repository endpoint's subnets use send the worker subnet back
    const repoSubnetIds = s3e?.subnetIds.length ? s3e.subnetIds : v.subnetsOf(repoVpcId).map((s) => s.subnetId);
    const tables = new Map<string, { table: AwsRouteTable; subnets: string[] }>();
    for (const sid of repoSubnetIds) {
      const t = v.routeTableFor(sid, repoVpcId);
      if (t) tables.set(t.routeTableId, { table: t, subnets: [...(tables.get(t.routeTableId)?.subnets ?? []), sid] });
    }
    if (tables.size === 0) {
      const main = model.routeTables.find((t) => t.vpcId === repoVpcId && t.main);
      if (main) tables.set(main.routeTableId, { table: main, subnets: [] });
    }
    if (tables.size === 0) {
      out.push(finding('route.repository-to-worker', 'warn', repoVpcId,
        `no route table of repository VPC ${repoVpcId} is in the data, so the return route cannot be checked`,
        `add the repository account's describe-route-tables output (region ${repoRegion}) to the file`));
    }
    for (const { table, subnets } of tables.values()) {
      const r = routeFor(table, subnet.cidr);
      const used = subnets.length ? `used by ${subnets.join(', ')}` : `main table of ${repoVpcId}`;
      if (targetOk(r)) out.push(finding('route.repository-to-worker', 'pass', table.routeTableId, `${table.routeTableId} (${used}) routes ${subnet.cidr} through ${r!.target}`));
      else {
        const dest = workerCidrs[0]!;
        out.push(finding('route.repository-to-worker', 'fail', table.routeTableId,
          `${table.routeTableId} (${used}) ${describeRoute(`the worker subnet ${subnet.cidr}`, r)}: replies from the repository's endpoint must go back through ${pcx ?? 'the peering connection'}`,
          routeFix(table, dest, routeFor(table, dest), repoRegion)));
      }
    }

    // cidr.overlap
    const overlaps = workerCidrs.flatMap((w) => repoCidrs.filter((r) => cidrsOverlap(w, r)).map((r) => `${w} (${workerVpcId}) overlaps ${r} (${repoVpcId})`));
    if (repoCidrs.length === 0) out.push(finding('cidr.overlap', 'warn', repoVpcId, `the CIDR of repository VPC ${repoVpcId} is not in the data`, `add the repository account's describe-vpcs output to the file`));
    else if (overlaps.length === 0) out.push(finding('cidr.overlap', 'pass', repoVpcId, `${workerCidrs.join(', ')} and ${repoCidrs.join(', ')} do not overlap`));
    else out.push(finding('cidr.overlap', 'fail', repoVpcId,
      `${overlaps.join('; ')}: peered VPCs must not overlap, or traffic to the repository stays in the worker VPC`,
      `re-address one side: put the worker subnet in a VPC whose CIDR differs from ${repoCidrs.join(', ')} (seed layout: worker 10.0.0.0/16, repository 11.0.0.0/16) or disassociate the overlapping block (aws ec2 disassociate-vpc-cidr-block)`));
  }

  return out;
}

/**
 * The preflight the pipeline runs before deploying a worker in private mode:
 * the same checks, driven by the policy's placement. Pure.
 */
export function preflightAws(
  model: AwsNetworkModel,
  placement: Placement,
  opts: { region?: string; repositoryVpcIds?: string[]; applianceCidr?: string; kms?: boolean } = {},
): Finding[] {
  return checkAwsNetwork(model, {
    region: opts.region ?? model.region,
    workerSubnetId: placement.subnet,
    workerSecurityGroupIds: placement.securityGroups ?? [],
    workerVpcId: placement.network,
    repositoryVpcIds: opts.repositoryVpcIds,
    applianceCidr: opts.applianceCidr,
    services: requiredAwsServices({ kms: opts.kms }),
  });
}
