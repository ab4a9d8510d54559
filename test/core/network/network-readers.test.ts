import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mockClient } from 'aws-sdk-client-mock';
import {
  EC2Client,
  DescribeVpcsCommand,
  DescribeSubnetsCommand,
  DescribeRouteTablesCommand,
  DescribeSecurityGroupsCommand,
  DescribeVpcEndpointsCommand,
  DescribeVpcPeeringConnectionsCommand,
} from '@aws-sdk/client-ec2';
import { createAwsNetworkReader, parseAwsDescribeFile } from '../../../shared/aws/network-reader.js';
import { createAzureNetworkReader, createArmPrivateDnsLister, parseAzureListFile } from '../../../shared/azure/network-reader.js';
import { checkAwsNetwork } from '../../../shared/core/network/aws-checks.js';
import { checkAzureNetwork } from '../../../shared/core/network/azure-checks.js';
import { failedChecks } from '../../../shared/core/network/report.js';
import { AccessDeniedError, ConfigError, TransientError } from '../../../shared/core/errors.js';
import { checkNetworkCommand } from '../../../cli/check-network.js';
import { AZURE, EXAMPLE1, loadAwsRaw, loadAzureRaw } from './fixtures.js';

const ec2 = mockClient(EC2Client);
afterEach(() => ec2.reset());

/** Serves a fixture's items over two pages per call, as EC2 pages them. */
function serveExample1() {
  const raw = loadAwsRaw(EXAMPLE1.dir);
  const calls: Array<[any, string, any[]]> = [
    [DescribeVpcsCommand, 'Vpcs', raw.vpcs],
    [DescribeSubnetsCommand, 'Subnets', raw.subnets],
    [DescribeRouteTablesCommand, 'RouteTables', raw.routeTables],
    [DescribeSecurityGroupsCommand, 'SecurityGroups', raw.securityGroups],
    [DescribeVpcEndpointsCommand, 'VpcEndpoints', raw.endpoints],
    [DescribeVpcPeeringConnectionsCommand, 'VpcPeeringConnections', raw.peerings],
  ];
  for (const [cmd, key, items] of calls) {
    const half = Math.ceil(items.length / 2);
    ec2.on(cmd, { NextToken: undefined }).resolves({ [key]: items.slice(0, half), NextToken: `${key}-page-2` });
    ec2.on(cmd, { NextToken: `${key}-page-2` }).resolves({ [key]: items.slice(half) });
  }
}

describe('AWS network reader (live, mocked EC2)', () => {
  test('reads every page of every describe call and the checks pass as from files', async () => {
    // Prepare
    serveExample1();
    // Act
    const model = await createAwsNetworkReader({ region: 'eu-west-1', client: new EC2Client({ region: 'eu-west-1' }) }).read();
    // Assess
    assert.equal(model.endpoints.length, 9);
    assert.equal(model.securityGroups.length, 5);
    assert.equal(ec2.commandCalls(DescribeVpcEndpointsCommand).length, 2);
    assert.deepEqual(failedChecks(checkAwsNetwork(model, EXAMPLE1.input)), []);
  });

  test('the CLI reads live through an injected client when --from is absent', async () => {
    serveExample1();
    const out: string[] = [];
    const code = await checkNetworkCommand(
      ['aws', '--region', 'eu-west-1', '--worker-subnet', EXAMPLE1.input.workerSubnetId, '--worker-security-group', EXAMPLE1.input.workerSecurityGroupIds[0]!, '--repository-vpc', EXAMPLE1.repoVpcIds[0]!, '--json'],
      { stdout: (s) => void out.push(s), stderr: (s) => void out.push(s), cwd: '/nonexistent', env: {} },
      { ec2: new EC2Client({ region: 'eu-west-1' }) },
    );
    assert.equal(code, 0, out.join(''));
    assert.equal(JSON.parse(out.join('')).ok, true);
  });

  test('denied and throttled calls become named errors that say what to do', async () => {
    const denied = Object.assign(new Error('You are not authorized to perform this operation.'), { name: 'UnauthorizedOperation', $metadata: { httpStatusCode: 403 } });
    ec2.onAnyCommand().resolves({});
    ec2.on(DescribeRouteTablesCommand).rejects(denied);
    await assert.rejects(createAwsNetworkReader({ region: 'eu-west-1', client: new EC2Client({ region: 'eu-west-1' }) }).read(),
      (e: unknown) => e instanceof AccessDeniedError && /ec2:DescribeRouteTables/.test(e.message) && /--from DIR/.test(e.message));
    ec2.reset();
    ec2.onAnyCommand().resolves({});
    ec2.on(DescribeSubnetsCommand).rejects(Object.assign(new Error('Rate exceeded'), { name: 'RequestLimitExceeded', $metadata: { httpStatusCode: 503 } }));
    await assert.rejects(createAwsNetworkReader({ region: 'eu-west-1', client: new EC2Client({ region: 'eu-west-1' }) }).read(), TransientError);
  });
});

describe('AWS describe files', () => {
  test('several accounts’ outputs appended into one file are all read', () => {
    const a = JSON.stringify({ Vpcs: [{ VpcId: 'vpc-1', CidrBlock: '10.0.0.0/16' }] }, null, 4);
    const b = JSON.stringify({ Vpcs: [{ VpcId: 'vpc-2', CidrBlock: '11.0.0.0/16' }] }, null, 4);
    assert.deepEqual(parseAwsDescribeFile('vpcs', `${a}\n${b}\n`).map((v) => v.VpcId), ['vpc-1', 'vpc-2']);
    assert.deepEqual(parseAwsDescribeFile('vpcs', JSON.stringify([JSON.parse(a), JSON.parse(b)])).map((v) => v.VpcId), ['vpc-1', 'vpc-2']);
  });

  test('broken text is a ConfigError naming the file and where it broke', () => {
    assert.throws(() => parseAwsDescribeFile('subnets', '{ "Subnets": [ { "SubnetId": "subnet-1" }\n'),
      (e: unknown) => e instanceof ConfigError && /describe-subnets\.json is not valid JSON/.test(e.message) && /line \d+/.test(e.message));
    assert.throws(() => parseAwsDescribeFile('subnets', ''), /describe-subnets\.json is empty/);
    assert.throws(() => parseAwsDescribeFile('subnets', '{"Subnets": [{}]} {"Subnets": [ }'), /describe-subnets\.json is not valid JSON/);
  });
});

/** An async iterable, as the Azure SDK's list methods return. */
async function* iterate<T>(items: T[]): AsyncIterable<T> {
  for (const x of items) yield x;
}

/** ARM REST nests a resource's fields under `properties`. */
function asArm(x: Record<string, any>) {
  const { id, name, type, etag, location, tags, ...properties } = x;
  return { id, name, type, etag, location, tags, properties };
}

describe('Azure network reader (live, injected clients)', () => {
  test('reads through the SDK clients and ARM REST for private DNS, following nextLink', async () => {
    // Prepare
    const raw = loadAzureRaw(AZURE.dir);
    const requests: string[] = [];
    const fakeFetch = (async (url: string, init?: RequestInit) => {
      requests.push(url);
      assert.equal((init?.headers as Record<string, string>).authorization, 'Bearer test-token');
      const path = new URL(url).pathname;
      const page2 = url.includes('page=2');
      let items: any[] = [];
      let nextLink: string | undefined;
      if (path.endsWith('/providers/Microsoft.Network/privateDnsZones')) {
        items = page2 ? raw.dnsZones.slice(1) : raw.dnsZones.slice(0, 1);
        if (!page2) nextLink = `${url}&page=2`;
      } else if (path.endsWith('/virtualNetworkLinks')) {
        items = raw.dnsLinks.filter((l) => l.id.toLowerCase().startsWith(path.replace('/virtualNetworkLinks', '').toLowerCase()));
      } else if (path.endsWith('/A')) {
        items = raw.dnsARecords.filter((r) => r.id.toLowerCase().startsWith(path.replace(/\/A$/, '').toLowerCase()));
      }
      return new Response(JSON.stringify({ value: items.map(asArm), nextLink }), { status: 200 });
    }) as typeof fetch;
    const credential = { getToken: async () => ({ token: 'test-token', expiresOnTimestamp: Date.now() + 3600_000 }) };
    const reader = createAzureNetworkReader({
      region: 'West Europe',
      network: {
        virtualNetworks: { listAll: () => iterate(raw.vnets) },
        networkSecurityGroups: { listAll: () => iterate(raw.nsgs) },
        privateEndpoints: { listBySubscription: () => iterate(raw.privateEndpoints) },
      },
      storage: { storageAccounts: { list: () => iterate(raw.storageAccounts) } },
      compute: { diskAccesses: { list: () => iterate(raw.diskAccesses) } },
      privateDns: createArmPrivateDnsLister({ credential, subscriptionId: '6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e5', fetch: fakeFetch }),
    });
    // Act
    const model = await reader.read();
    // Assess
    assert.equal(model.region, 'westeurope');
    assert.equal(model.dnsZones.length, 2);
    assert.equal(model.dnsLinks.length, 2);
    assert.equal(model.dnsARecords.length, 3);
    assert.equal(requests.length, 2 + 2 * 2);
    assert.deepEqual(failedChecks(checkAzureNetwork(model, AZURE.input)), []);
  });

  test('a 403 from Azure is an AccessDeniedError; live without a subscription is a ConfigError', async () => {
    const failing = { listAll: () => (async function* () { throw Object.assign(new Error('AuthorizationFailed'), { statusCode: 403 }); })() };
    const reader = createAzureNetworkReader({
      region: 'westeurope',
      network: { virtualNetworks: failing, networkSecurityGroups: { listAll: () => iterate([]) }, privateEndpoints: { listBySubscription: () => iterate([]) } },
      storage: { storageAccounts: { list: () => iterate([]) } },
      compute: { diskAccesses: { list: () => iterate([]) } },
      privateDns: { listZones: () => iterate([]), listVnetLinks: () => iterate([]), listARecords: () => iterate([]) },
    });
    await assert.rejects(reader.read(), (e: unknown) => e instanceof AccessDeniedError && /Reader on the subscription/.test(e.message));
    await assert.rejects(createAzureNetworkReader({ region: 'westeurope' }).read(), (e: unknown) => e instanceof ConfigError && /--subscription/.test(e.message));
  });

  test('per-zone outputs appended into one file are all read', () => {
    const a = JSON.stringify([{ id: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/privateDnsZones/privatelink.blob.core.windows.net/A/x', name: 'x', aRecords: [{ ipv4Address: '10.0.0.4' }] }], null, 2);
    const b = JSON.stringify([{ id: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/privateDnsZones/privatelink.queue.core.windows.net/A/x', name: 'x', aRecords: [{ ipv4Address: '10.0.0.5' }] }], null, 2);
    assert.equal(parseAzureListFile('dnsARecords', `${a}\n${b}`).length, 2);
    assert.throws(() => parseAzureListFile('vnets', '{"Vpcs": []}'), /network-vnet-list\.json is not the output of `az network vnet list/);
  });
});
