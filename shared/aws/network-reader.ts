// Reads an AWS network into the model the private-network checks use: from
// the JSON files `aws ec2 describe-* --output json` writes (--from DIR), or
// live through an injected EC2Client, every page of every call. The SDK's
// output shapes are the CLI's JSON, so one normaliser serves both.

import {
  EC2Client,
  paginateDescribeRouteTables,
  paginateDescribeSecurityGroups,
  paginateDescribeSubnets,
  paginateDescribeVpcEndpoints,
  paginateDescribeVpcPeeringConnections,
  paginateDescribeVpcs,
} from '@aws-sdk/client-ec2';
import { AccessDeniedError, ConfigError, NotFoundError, TransientError, toError } from '../core/errors.js';
import { collectItems, parseJsonDocuments, readCliOutputFile } from '../core/network/json-documents.js';
import type {
  AwsNetworkModel,
  AwsPeering,
  AwsPeeringSide,
  AwsRouteTable,
  AwsSecurityGroup,
  AwsSgRule,
  AwsSubnet,
  AwsVpc,
  AwsVpcEndpoint,
} from '../core/network/types.js';

/** One file per call, named after it, and the key the CLI prints the items under. */
export const AWS_NETWORK_FILES = {
  vpcs: { file: 'describe-vpcs.json', key: 'Vpcs', call: 'describe-vpcs' },
  subnets: { file: 'describe-subnets.json', key: 'Subnets', call: 'describe-subnets' },
  routeTables: { file: 'describe-route-tables.json', key: 'RouteTables', call: 'describe-route-tables' },
  securityGroups: { file: 'describe-security-groups.json', key: 'SecurityGroups', call: 'describe-security-groups' },
  endpoints: { file: 'describe-vpc-endpoints.json', key: 'VpcEndpoints', call: 'describe-vpc-endpoints' },
  peerings: { file: 'describe-vpc-peering-connections.json', key: 'VpcPeeringConnections', call: 'describe-vpc-peering-connections' },
} as const;

export type AwsNetworkPart = keyof typeof AWS_NETWORK_FILES;

/** The raw items of each describe call (CLI JSON or SDK output, which share a shape). */
export type AwsDescribeItems = Record<AwsNetworkPart, Record<string, unknown>[]>;

type Raw = Record<string, any>;

const str = (x: unknown): string | undefined => (typeof x === 'string' && x !== '' ? x : undefined);
const arr = (x: unknown): Raw[] => (Array.isArray(x) ? (x.filter((i) => i && typeof i === 'object') as Raw[]) : []);
const num = (x: unknown): number | undefined => (typeof x === 'number' ? x : typeof x === 'string' && /^-?\d+$/.test(x) ? Number(x) : undefined);

function need(item: Raw, field: string, file: string): string {
  const v = str(item[field]);
  if (!v) throw new ConfigError(`${file}: an entry has no "${field}" — is this the unmodified output of \`aws ec2 ${file.replace(/\.json$/, '')} --output json\`?`);
  return v;
}

function uniq(xs: Array<string | undefined>): string[] {
  return [...new Set(xs.filter((x): x is string => !!x))];
}

function vpcCidrs(v: Raw): string[] {
  const assoc = arr(v.CidrBlockAssociationSet)
    .filter((a) => !a.CidrBlockState?.State || a.CidrBlockState.State === 'associated')
    .map((a) => str(a.CidrBlock));
  return uniq([str(v.CidrBlock), ...assoc]);
}

function sgRule(p: Raw): AwsSgRule {
  return {
    protocol: String(p.IpProtocol ?? '-1'),
    fromPort: num(p.FromPort),
    toPort: num(p.ToPort),
    cidrs: uniq(arr(p.IpRanges).map((r) => str(r.CidrIp))),
    groupIds: uniq(arr(p.UserIdGroupPairs).map((g) => str(g.GroupId))),
    prefixListIds: uniq(arr(p.PrefixListIds).map((g) => str(g.PrefixListId))),
  };
}

function peeringSide(s: Raw | undefined): AwsPeeringSide {
  const side = s ?? {};
  return {
    vpcId: str(side.VpcId) ?? '',
    cidrs: uniq([str(side.CidrBlock), ...arr(side.CidrBlockSet).map((c) => str(c.CidrBlock))]),
    ownerId: str(side.OwnerId),
    region: str(side.Region),
  };
}

function routeTarget(r: Raw): string {
  return (
    str(r.VpcPeeringConnectionId) ?? str(r.TransitGatewayId) ?? str(r.NatGatewayId) ?? str(r.GatewayId) ?? str(r.NetworkInterfaceId) ??
    str(r.InstanceId) ?? str(r.LocalGatewayId) ?? str(r.CarrierGatewayId) ?? str(r.EgressOnlyInternetGatewayId) ?? str(r.CoreNetworkArn) ?? ''
  );
}

/**
 * Pure: raw describe items → model. Items appearing twice (the same account
 * described twice into one file) count once.
 */
export function normaliseAwsNetwork(items: AwsDescribeItems, region: string): AwsNetworkModel {
  const raw = items as unknown as Record<AwsNetworkPart, Raw[]>;
  const f = AWS_NETWORK_FILES;
  const dedupe = <T>(items: T[], id: (t: T) => string) => [...new Map(items.map((t) => [id(t), t])).values()];

  const vpcs: AwsVpc[] = raw.vpcs.map((v) => ({ vpcId: need(v, 'VpcId', f.vpcs.file), ownerId: str(v.OwnerId), cidrs: vpcCidrs(v) }));

  const subnets: AwsSubnet[] = raw.subnets.map((s) => ({
    subnetId: need(s, 'SubnetId', f.subnets.file),
    vpcId: need(s, 'VpcId', f.subnets.file),
    cidr: need(s, 'CidrBlock', f.subnets.file),
    availabilityZone: str(s.AvailabilityZone),
    ownerId: str(s.OwnerId),
  }));

  const routeTables: AwsRouteTable[] = raw.routeTables.map((t) => {
    const assoc = arr(t.Associations).filter((a) => !a.AssociationState?.State || a.AssociationState.State === 'associated');
    return {
      routeTableId: need(t, 'RouteTableId', f.routeTables.file),
      vpcId: need(t, 'VpcId', f.routeTables.file),
      main: assoc.some((a) => a.Main === true),
      subnetIds: uniq(assoc.map((a) => str(a.SubnetId))),
      routes: arr(t.Routes)
        .filter((r) => str(r.DestinationCidrBlock))
        .map((r) => ({ destination: r.DestinationCidrBlock as string, target: routeTarget(r), state: str(r.State) ?? 'active' })),
    };
  });

  const securityGroups: AwsSecurityGroup[] = raw.securityGroups.map((g) => ({
    groupId: need(g, 'GroupId', f.securityGroups.file),
    groupName: str(g.GroupName),
    vpcId: str(g.VpcId),
    ownerId: str(g.OwnerId),
    ingress: arr(g.IpPermissions).map(sgRule),
    egress: arr(g.IpPermissionsEgress).map(sgRule),
  }));

  const endpoints: AwsVpcEndpoint[] = raw.endpoints.map((e) => ({
    endpointId: need(e, 'VpcEndpointId', f.endpoints.file),
    vpcId: need(e, 'VpcId', f.endpoints.file),
    serviceName: need(e, 'ServiceName', f.endpoints.file),
    type: str(e.VpcEndpointType) ?? 'Gateway',
    // The API answers `available`, the SDK's enum says `Available`: compare in one case.
    state: (str(e.State) ?? 'unknown').toLowerCase().replace(/[^a-z]/g, ''),
    privateDnsEnabled: e.PrivateDnsEnabled === true,
    subnetIds: uniq(Array.isArray(e.SubnetIds) ? e.SubnetIds.map((x: unknown) => str(x)) : []),
    groupIds: uniq(arr(e.Groups).map((g) => str(g.GroupId))),
    ownerId: str(e.OwnerId),
  }));

  const peerings: AwsPeering[] = raw.peerings.map((p) => ({
    peeringId: need(p, 'VpcPeeringConnectionId', f.peerings.file),
    requester: peeringSide(p.RequesterVpcInfo),
    accepter: peeringSide(p.AccepterVpcInfo),
    status: str(p.Status?.Code) ?? 'unknown',
  }));

  return {
    region,
    vpcs: dedupe(vpcs, (x) => x.vpcId),
    subnets: dedupe(subnets, (x) => x.subnetId),
    routeTables: dedupe(routeTables, (x) => x.routeTableId),
    securityGroups: dedupe(securityGroups, (x) => x.groupId),
    endpoints: dedupe(endpoints, (x) => x.endpointId),
    peerings: dedupe(peerings, (x) => x.peeringId),
  };
}

/** Parses one describe-* file's text (one or several appended outputs). Throws ConfigError naming the file. */
export function parseAwsDescribeFile(part: AwsNetworkPart, text: string): Record<string, unknown>[] {
  const { file, key, call } = AWS_NETWORK_FILES[part];
  const how = `aws ec2 ${call} --output json > ${file}`;
  return collectItems(parseJsonDocuments(text, file, how), file, key, how);
}

/** Reads the six describe-* files from `dir`. A missing, unreadable or malformed file is a ConfigError naming it. */
export async function readAwsNetworkFromDir(dir: string, region: string): Promise<AwsNetworkModel> {
  const raw = {} as AwsDescribeItems;
  for (const part of Object.keys(AWS_NETWORK_FILES) as AwsNetworkPart[]) {
    const { file, call } = AWS_NETWORK_FILES[part];
    const text = await readCliOutputFile(dir, file, `aws ec2 ${call} --region ${region} --output json > ${file}`);
    raw[part] = parseAwsDescribeFile(part, text);
  }
  return normaliseAwsNetwork(raw, region);
}

const THROTTLING = new Set(['Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'RequestThrottled', 'RequestThrottledException', 'TooManyRequestsException']);

/** SDK errors → Tender's named errors, with what to do. */
export function normaliseEc2Error(thrown: unknown, call: string): Error {
  const err = toError(thrown) as Error & { $metadata?: { httpStatusCode?: number }; code?: string };
  const status = err.$metadata?.httpStatusCode;
  const name = err.name;
  if (THROTTLING.has(name) || (status !== undefined && status >= 500) || /timeout|ETIMEDOUT|ECONNRESET|EAI_AGAIN/i.test(`${name} ${err.code ?? ''}`)) {
    return new TransientError(`ec2:${call} failed transiently (${name}): run the check again`, { cause: err });
  }
  if (name === 'UnauthorizedOperation' || name === 'AccessDenied' || name === 'AccessDeniedException' || status === 403) {
    return new AccessDeniedError(`ec2:${call} was denied (${err.message}): the caller needs ec2:${call[0]!.toUpperCase()}${call.slice(1)} — or describe the network with the AWS CLI and pass --from DIR`, { cause: err });
  }
  if (status === 404) return new NotFoundError(`ec2:${call} found nothing (${err.message})`, { cause: err });
  if (name === 'AuthFailure' || name === 'CredentialsProviderError') {
    return new AccessDeniedError(`no usable AWS credentials for ec2:${call} (${err.message}): configure credentials or pass --from DIR`, { cause: err });
  }
  return err;
}

export interface AwsNetworkReader {
  read(): Promise<AwsNetworkModel>;
}

/** Live reader over an injected client (tests pass a mocked one). Reads the whole region, every page. */
export function createAwsNetworkReader(opts: { region: string; client?: EC2Client; pageSize?: number }): AwsNetworkReader {
  const client = opts.client ?? new EC2Client({ region: opts.region });
  const pageSize = opts.pageSize ?? 1000;
  async function all<P>(call: string, pages: AsyncIterable<P>, key: keyof P): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    try {
      for await (const page of pages) items.push(...(((page[key] as unknown[]) ?? []) as Record<string, unknown>[]));
    } catch (e) {
      throw normaliseEc2Error(e, call);
    }
    return items;
  }
  const cfg = { client, pageSize };
  return {
    async read() {
      const [vpcs, subnets, routeTables, securityGroups, endpoints, peerings] = await Promise.all([
        all('describeVpcs', paginateDescribeVpcs(cfg, {}), 'Vpcs'),
        all('describeSubnets', paginateDescribeSubnets(cfg, {}), 'Subnets'),
        all('describeRouteTables', paginateDescribeRouteTables(cfg, {}), 'RouteTables'),
        all('describeSecurityGroups', paginateDescribeSecurityGroups(cfg, {}), 'SecurityGroups'),
        all('describeVpcEndpoints', paginateDescribeVpcEndpoints(cfg, {}), 'VpcEndpoints'),
        all('describeVpcPeeringConnections', paginateDescribeVpcPeeringConnections(cfg, {}), 'VpcPeeringConnections'),
      ]);
      return normaliseAwsNetwork({ vpcs, subnets, routeTables, securityGroups, endpoints, peerings }, opts.region);
    },
  };
}
