import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { checkAzureNetwork, preflightAzure, effectiveOutboundRule } from '../../../shared/core/network/azure-checks.js';
import { failedChecks, assertPreflight } from '../../../shared/core/network/report.js';
import { NetworkPreflightError } from '../../../shared/core/errors.js';
import { AZURE, azureModel, clone, loadAzureRaw, type AzureRaw } from './fixtures.js';

const complete = loadAzureRaw(AZURE.dir);
const BLOB = 'privatelink.blob.core.windows.net';
const QUEUE = 'privatelink.queue.core.windows.net';

const pe = (raw: AzureRaw, group: string) => raw.privateEndpoints.find((p) => p.privateLinkServiceConnections[0].groupIds[0] === group);
const zoneOf = (id: string) => /privateDnsZones\/([^/]+)/.exec(id)![1];

interface Variant {
  name: string;
  check: string;
  mutate: (raw: AzureRaw) => void;
  fixIncludes?: string[];
}

const VARIANTS: Variant[] = [
  {
    name: 'the storage account lacks the deployment tag',
    check: 'storage.account',
    mutate: (raw) => void delete raw.storageAccounts.find((a) => a.name === AZURE.account).tags['tender:appliance'],
    fixIncludes: ['az storage account', '-l westeurope', 'tender:appliance=tender'],
  },
  {
    name: 'the tagged storage account is in another region',
    check: 'storage.account',
    mutate: (raw) => void (raw.storageAccounts.find((a) => a.name === AZURE.account).location = 'germanywestcentral'),
  },
  {
    name: 'the blob private endpoint is missing',
    check: 'endpoint.blob',
    mutate: (raw) => {
      raw.privateEndpoints = raw.privateEndpoints.filter((p) => p !== pe(raw, 'blob'));
    },
    fixIncludes: ['az network private-endpoint create', '--group-id blob', '--vnet-name tender-workers-vnet', `storageAccounts/${AZURE.account}`],
  },
  {
    name: 'the blob private endpoint waits for approval',
    check: 'endpoint.blob',
    mutate: (raw) => void (pe(raw, 'blob').privateLinkServiceConnections[0].privateLinkServiceConnectionState.status = 'Pending'),
    fixIncludes: ['approve'],
  },
  {
    name: 'the queue private endpoint is in another VNET',
    check: 'endpoint.queue',
    mutate: (raw) => {
      const p = pe(raw, 'queue');
      p.subnet.id = p.subnet.id.replace('tender-workers-vnet/subnets/private-endpoints', 'hub-vnet/subnets/shared');
    },
    fixIncludes: ['--group-id queue'],
  },
  {
    name: 'the queue private endpoint is missing',
    check: 'endpoint.queue',
    mutate: (raw) => {
      raw.privateEndpoints = raw.privateEndpoints.filter((p) => p !== pe(raw, 'queue'));
    },
  },
  {
    name: 'the blob zone is not linked to the worker VNET',
    check: 'dns.zone-link',
    mutate: (raw) => {
      raw.dnsLinks = raw.dnsLinks.filter((l) => zoneOf(l.id) !== BLOB);
    },
    fixIncludes: ['az network private-dns link vnet create', `-z ${BLOB}`, 'virtualNetworks/tender-workers-vnet'],
  },
  {
    name: 'the queue zone link is still in progress',
    check: 'dns.zone-link',
    mutate: (raw) => void (raw.dnsLinks.find((l) => zoneOf(l.id) === QUEUE).virtualNetworkLinkState = 'InProgress'),
  },
  {
    name: 'the queue zone does not exist',
    check: 'dns.zone-link',
    mutate: (raw) => {
      raw.dnsZones = raw.dnsZones.filter((z) => z.name !== QUEUE);
      raw.dnsLinks = raw.dnsLinks.filter((l) => zoneOf(l.id) !== QUEUE);
      raw.dnsARecords = raw.dnsARecords.filter((r) => zoneOf(r.id) !== QUEUE);
    },
    fixIncludes: [`az network private-dns zone create`, `-n ${QUEUE}`],
  },
  {
    name: 'the blob A record is missing',
    check: 'dns.record',
    mutate: (raw) => {
      raw.dnsARecords = raw.dnsARecords.filter((r) => !(zoneOf(r.id) === BLOB && r.name === AZURE.account));
    },
    fixIncludes: ['az network private-dns record-set a add-record', `-z ${BLOB}`, `-n ${AZURE.account}`, '-a 10.20.2.4'],
  },
  {
    name: 'the queue A record points outside the endpoint subnet',
    check: 'dns.record',
    mutate: (raw) => void (raw.dnsARecords.find((r) => zoneOf(r.id) === QUEUE && r.name === AZURE.account).aRecords = [{ ipv4Address: '52.239.0.12' }]),
    fixIncludes: ['remove-record', '52.239.0.12'],
  },
  {
    name: 'the blob A record points at a different private IP',
    check: 'dns.record',
    mutate: (raw) => void (raw.dnsARecords.find((r) => zoneOf(r.id) === BLOB && r.name === AZURE.account).aRecords = [{ ipv4Address: '10.20.2.9' }]),
  },
  {
    name: 'there is no disk-access resource',
    check: 'endpoint.disk-access',
    mutate: (raw) => {
      raw.diskAccesses = [];
      raw.privateEndpoints = raw.privateEndpoints.filter((p) => p !== pe(raw, 'disks'));
    },
    fixIncludes: ['az disk-access create', '-l westeurope', '--group-id disks'],
  },
  {
    name: 'the disk access has no private endpoint',
    check: 'endpoint.disk-access',
    mutate: (raw) => {
      raw.privateEndpoints = raw.privateEndpoints.filter((p) => p !== pe(raw, 'disks'));
      raw.diskAccesses[0].privateEndpointConnections = [];
    },
    fixIncludes: ['az network private-endpoint create', 'diskAccesses/tender-disk-access-westeurope'],
  },
  {
    name: 'the disk-access private endpoint waits for approval',
    check: 'endpoint.disk-access',
    mutate: (raw) => {
      pe(raw, 'disks').privateLinkServiceConnections[0].privateLinkServiceConnectionState.status = 'Pending';
      raw.diskAccesses[0].privateEndpointConnections[0].privateLinkServiceConnectionState.status = 'Pending';
    },
  },
  {
    name: 'the worker NSG lost its HTTPS allow rule (a custom deny-all remains)',
    check: 'nsg.worker-egress-443',
    mutate: (raw) => {
      raw.nsgs[0].securityRules = raw.nsgs[0].securityRules.filter((r: any) => r.access !== 'Allow');
    },
    fixIncludes: ['az network nsg rule create', '--nsg-name tender-workers-nsg', '--direction Outbound', '--destination-port-ranges 443', '--priority 4095'],
  },
  {
    name: 'the worker NSG allows 8443 instead of 443',
    check: 'nsg.worker-egress-443',
    mutate: (raw) => void (raw.nsgs[0].securityRules.find((r: any) => r.access === 'Allow').destinationPortRange = '8443'),
  },
];

describe('Azure network checks (seed 000 private network)', () => {
  test('the complete topology passes every check', () => {
    // Act
    const findings = checkAzureNetwork(azureModel(clone(complete), 'westeurope'), AZURE.input);
    // Assess
    assert.deepEqual(failedChecks(findings), []);
    assert.deepEqual(findings.filter((f) => f.status === 'warn'), []);
    assert.deepEqual([...new Set(findings.map((f) => f.check))], [
      'placement', 'storage.account', 'endpoint.blob', 'endpoint.queue', 'dns.zone-link', 'dns.record', 'endpoint.disk-access', 'nsg.worker-egress-443',
    ]);
  });

  for (const v of VARIANTS) {
    test(`${v.name} → only ${v.check} fails`, () => {
      // Prepare
      const raw = clone(complete);
      v.mutate(raw);
      // Act
      const findings = checkAzureNetwork(azureModel(raw, 'westeurope'), AZURE.input);
      // Assess
      assert.deepEqual(failedChecks(findings), [v.check], JSON.stringify(findings.filter((f) => f.status !== 'pass'), null, 2));
      const failing = findings.filter((f) => f.status === 'fail');
      assert.equal(failing.length, 1);
      assert.ok(failing[0]!.fix);
      for (const part of v.fixIncludes ?? []) assert.ok(failing[0]!.fix!.includes(part), `fix "${failing[0]!.fix}" names ${part}`);
    });
  }

  test('the subnet can be named with its VNET instead of its id', () => {
    const model = azureModel(clone(complete), 'westeurope');
    const byName = checkAzureNetwork(model, { ...AZURE.input, workerSubnet: 'workers', workerVnet: 'tender-workers-vnet' });
    assert.deepEqual(failedChecks(byName), []);
    const unknown = checkAzureNetwork(model, { ...AZURE.input, workerSubnet: 'nope', workerVnet: 'tender-workers-vnet' });
    assert.deepEqual(unknown.map((f) => [f.check, f.status]), [['placement', 'fail']]);
  });

  test('a subnet without an NSG passes: Azure lets traffic inside the VNET out by default', () => {
    const raw = clone(complete);
    delete raw.vnets[0].subnets[0].networkSecurityGroup;
    const f = checkAzureNetwork(azureModel(raw, 'westeurope'), AZURE.input).find((x) => x.check === 'nsg.worker-egress-443')!;
    assert.equal(f.status, 'pass');
  });

  test('NSG rules are evaluated in priority order, with Azure’s defaults when the data omits them', () => {
    const base = { id: 'n', name: 'n' };
    const allowVnet = effectiveOutboundRule({ ...base, rules: [] }, '10.0.1.0/24', '10.0.2.4/32', ['10.0.0.0/16']);
    assert.equal(allowVnet, undefined);
    const rules = [
      { name: 'deny', priority: 200, direction: 'Outbound' as const, access: 'Deny' as const, protocol: '*', sourcePrefixes: ['*'], destinationPrefixes: ['VirtualNetwork'], destinationPorts: ['*'] },
      { name: 'allow', priority: 100, direction: 'Outbound' as const, access: 'Allow' as const, protocol: 'Tcp', sourcePrefixes: ['10.0.1.0/24'], destinationPrefixes: ['10.0.2.0/24'], destinationPorts: ['400-500'] },
    ];
    assert.equal(effectiveOutboundRule({ ...base, rules }, '10.0.1.0/24', '10.0.2.4/32', ['10.0.0.0/16'])!.name, 'allow');
    assert.equal(effectiveOutboundRule({ ...base, rules }, '10.0.1.0/24', '10.0.3.4/32', ['10.0.0.0/16'])!.name, 'deny');
  });

  test('preflight fails fast with the failing checks named', () => {
    const raw = clone(complete);
    raw.dnsLinks = [];
    const model = azureModel(raw, 'westeurope');
    const findings = preflightAzure(model, { subnet: AZURE.input.workerSubnet, securityGroups: [], network: 'tender-workers-vnet' }, { deploymentId: 'tender' });
    assert.deepEqual(failedChecks(findings), ['dns.zone-link']);
    assert.throws(() => assertPreflight(findings), (e: unknown) => e instanceof NetworkPreflightError && e.message.includes('dns.zone-link') && e.message.includes('privatelink.queue.core.windows.net'));
  });
});
