// The normalised network model the private-network checks run on, and the
// findings they produce. Readers (shared/aws/network-reader.ts,
// shared/azure/network-reader.ts) turn what the cloud describes — live or
// from CLI JSON files — into these shapes, so the checks stay pure and the
// CLI, the tests and the pipeline's preflight all run the same code.

export type FindingStatus = 'pass' | 'warn' | 'fail';

export interface Finding {
  /** Stable id of the check, e.g. `endpoint.ssm`, `route.worker-to-repository`. */
  check: string;
  status: FindingStatus;
  /** The resource the finding is about (endpoint, route table, security group, …). */
  resource: string;
  /** What was found; for a failure, what is wrong. */
  message: string;
  /** The concrete fix (a command to run, a rule or route to add); null when nothing is to be done. */
  fix: string | null;
}

export interface NetworkReport {
  /** False as soon as one finding fails; warnings do not fail the report. */
  ok: boolean;
  findings: Finding[];
}

// ---------------------------------------------------------------- AWS

export interface AwsVpc {
  vpcId: string;
  ownerId?: string;
  /** Known when the data says so (peering info); describe-vpcs does not. */
  region?: string;
  /** Every associated IPv4 block, primary first. */
  cidrs: string[];
}

export interface AwsSubnet {
  subnetId: string;
  vpcId: string;
  cidr: string;
  availabilityZone?: string;
  ownerId?: string;
}

export interface AwsRoute {
  destination: string;
  /** `local`, `pcx-…`, `igw-…`, `nat-…`, `tgw-…`, `vpce-…`, `eni-…` or `''` when unknown. */
  target: string;
  /** `active` or `blackhole`. */
  state: string;
}

export interface AwsRouteTable {
  routeTableId: string;
  vpcId: string;
  /** The VPC's main table: used by every subnet without an explicit association. */
  main: boolean;
  /** Subnets explicitly associated with this table. */
  subnetIds: string[];
  routes: AwsRoute[];
}

export interface AwsSgRule {
  /** `-1` (all), `tcp`, `udp`, `icmp` or a protocol number as a string. */
  protocol: string;
  fromPort?: number;
  toPort?: number;
  cidrs: string[];
  /** Security groups referenced as source (ingress) or destination (egress). */
  groupIds: string[];
  prefixListIds: string[];
}

export interface AwsSecurityGroup {
  groupId: string;
  groupName?: string;
  vpcId?: string;
  ownerId?: string;
  ingress: AwsSgRule[];
  egress: AwsSgRule[];
}

export interface AwsVpcEndpoint {
  endpointId: string;
  vpcId: string;
  serviceName: string;
  /** `Interface`, `Gateway` or `GatewayLoadBalancer`. */
  type: string;
  /** Lower case: `available`, `pending`, `pendingacceptance`, `failed`, … */
  state: string;
  privateDnsEnabled: boolean;
  subnetIds: string[];
  groupIds: string[];
  ownerId?: string;
}

export interface AwsPeeringSide {
  vpcId: string;
  cidrs: string[];
  ownerId?: string;
  region?: string;
}

export interface AwsPeering {
  peeringId: string;
  requester: AwsPeeringSide;
  accepter: AwsPeeringSide;
  /** `active`, `pending-acceptance`, `provisioning`, `rejected`, `deleted`, … */
  status: string;
}

export interface AwsNetworkModel {
  /** The region the worker runs in. */
  region: string;
  vpcs: AwsVpc[];
  subnets: AwsSubnet[];
  routeTables: AwsRouteTable[];
  securityGroups: AwsSecurityGroup[];
  endpoints: AwsVpcEndpoint[];
  peerings: AwsPeering[];
}

// ---------------------------------------------------------------- Azure

export interface AzureSubnet {
  id: string;
  name: string;
  vnetId: string;
  prefixes: string[];
  nsgId?: string;
}

export interface AzureVnet {
  id: string;
  name: string;
  location: string;
  prefixes: string[];
  subnets: AzureSubnet[];
}

export interface AzureStorageAccount {
  id: string;
  name: string;
  location: string;
  tags: Record<string, string>;
}

export interface AzurePrivateLinkConnection {
  /** The resource the endpoint connects to (storage account, disk access, …). */
  targetId: string;
  /** Sub-resources: `blob`, `queue`, `disks`, … */
  groupIds: string[];
  /** `Approved`, `Pending`, `Rejected`, `Disconnected`. */
  status: string;
}

export interface AzurePrivateEndpoint {
  id: string;
  name: string;
  location: string;
  subnetId: string;
  /** Private IPs of the endpoint when the data names them (custom DNS configs, static IP configs). */
  ips: string[];
  provisioningState: string;
  connections: AzurePrivateLinkConnection[];
}

export interface AzureDiskAccess {
  id: string;
  name: string;
  location: string;
  /** Connections as the disk access records them (approval lives on both sides). */
  connections: Array<{ privateEndpointId: string; status: string }>;
}

export interface AzureDnsZone {
  id: string;
  name: string;
}

export interface AzureDnsLink {
  id: string;
  zoneName: string;
  /** Id of the zone the link belongs to, when known. */
  zoneId?: string;
  vnetId: string;
  /** `Completed` once the link works (virtualNetworkLinkState), else `InProgress`. */
  state: string;
}

export interface AzureDnsARecord {
  zoneName: string;
  zoneId?: string;
  /** Relative name in the zone, e.g. the storage account name. */
  name: string;
  ips: string[];
}

export interface AzureNsgRule {
  name: string;
  priority: number;
  direction: 'Inbound' | 'Outbound';
  access: 'Allow' | 'Deny';
  /** `Tcp`, `Udp`, `Icmp`, `*`, … */
  protocol: string;
  sourcePrefixes: string[];
  destinationPrefixes: string[];
  destinationPorts: string[];
}

export interface AzureNsg {
  id: string;
  name: string;
  /** Custom and default rules together. */
  rules: AzureNsgRule[];
}

export interface AzureNetworkModel {
  /** The region (location) the worker runs in, lower case without spaces. */
  region: string;
  vnets: AzureVnet[];
  nsgs: AzureNsg[];
  privateEndpoints: AzurePrivateEndpoint[];
  storageAccounts: AzureStorageAccount[];
  diskAccesses: AzureDiskAccess[];
  dnsZones: AzureDnsZone[];
  dnsLinks: AzureDnsLink[];
  dnsARecords: AzureDnsARecord[];
}
