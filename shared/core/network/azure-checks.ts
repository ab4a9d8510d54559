// What a Tender worker without a public IP needs from an Azure network, checked
// over the normalised model before any worker starts (seed 000: the regional
// storage account reached through blob and queue private endpoints, private
// DNS zones linked to the worker VNET, a disk-access resource with its private
// endpoint for snapshot reads, and an NSG that lets the worker out on 443).
//
// As on AWS, a check that depends on a piece another check found missing
// stays quiet about it, so each failure points at one thing to fix.

import type { Placement } from '../config.js';
import { cidrContains, isCidr } from './cidr.js';
import type { AzureNetworkModel, AzureNsg, AzureNsgRule, AzurePrivateEndpoint, AzureStorageAccount, AzureSubnet, AzureVnet, Finding } from './types.js';

/**
 * The tag that marks the storage account of a Tender deployment; its value is
 * the deployment id (config `applianceId`). The same key tenderTags() in
 * shared/core/tags.ts puts on everything Tender makes.
 */
export const TENDER_DEPLOYMENT_TAG = 'tender:appliance';

export const AZURE_DNS_ZONES = {
  blob: 'privatelink.blob.core.windows.net',
  queue: 'privatelink.queue.core.windows.net',
} as const;

export interface AzureCheckInput {
  /** Azure location of the worker, e.g. `westeurope`. */
  region: string;
  /** Subnet resource id, or its name together with `workerVnet`. */
  workerSubnet: string;
  /** VNET name or resource id (placement.network). */
  workerVnet?: string;
  /** Value of the deployment tag on the regional storage account. */
  deploymentId: string;
  /** Tag name; default TENDER_DEPLOYMENT_TAG. */
  deploymentTag?: string;
}

export function normaliseLocation(loc: string | undefined): string {
  return (loc ?? '').toLowerCase().replace(/\s+/g, '');
}

const lc = (s: string | undefined) => (s ?? '').toLowerCase();
const sameId = (a: string | undefined, b: string | undefined) => !!a && !!b && lc(a) === lc(b);

export function resourceGroupOf(id: string): string {
  return /\/resourceGroups\/([^/]+)/i.exec(id)?.[1] ?? '<resource-group>';
}
export function nameOf(id: string): string {
  return id.split('/').filter(Boolean).pop() ?? id;
}

function finding(check: string, status: Finding['status'], resource: string, message: string, fix: string | null = null): Finding {
  return { check, status, resource, message, fix };
}

function vnetOfSubnetId(subnetId: string): string {
  return subnetId.replace(/\/subnets\/[^/]+$/i, '');
}

function isApproved(status: string): boolean {
  return lc(status) === 'approved';
}

/** Does an NSG address prefix (CIDR, `*`, service tag) cover `cidr`? Unknown tags cover nothing. */
function prefixCovers(prefix: string, cidr: string, vnetPrefixes: string[]): boolean {
  const p = prefix.trim();
  if (p === '*' || lc(p) === 'any' || p === '0.0.0.0/0') return true;
  if (lc(p) === 'virtualnetwork') return vnetPrefixes.some((v) => cidrContains(v, cidr));
  return isCidr(p) && cidrContains(p, cidr);
}

function portCovers(range: string, port: number): boolean {
  const r = range.trim();
  if (r === '*') return true;
  const m = /^(\d+)(?:-(\d+))?$/.exec(r);
  if (!m) return false;
  const from = Number(m[1]);
  const to = m[2] ? Number(m[2]) : from;
  return from <= port && port <= to;
}

/** The outbound rule an NSG applies to tcp/443 from `source` to `dest` (lowest priority number wins). */
export function effectiveOutboundRule(nsg: AzureNsg, source: string, dest: string, vnetPrefixes: string[]): AzureNsgRule | undefined {
  return nsg.rules
    .filter((r) => r.direction === 'Outbound')
    .sort((a, b) => a.priority - b.priority)
    .find(
      (r) =>
        (r.protocol === '*' || lc(r.protocol) === 'tcp') &&
        r.destinationPorts.some((p) => portCovers(p, 443)) &&
        r.sourcePrefixes.some((p) => prefixCovers(p, source, vnetPrefixes)) &&
        r.destinationPrefixes.some((p) => prefixCovers(p, dest, vnetPrefixes)),
    );
}

/** Azure's default rules, for data that lists only the custom ones. */
export const AZURE_DEFAULT_OUTBOUND_RULES: readonly AzureNsgRule[] = [
  { name: 'AllowVnetOutBound', priority: 65000, direction: 'Outbound', access: 'Allow', protocol: '*', sourcePrefixes: ['VirtualNetwork'], destinationPrefixes: ['VirtualNetwork'], destinationPorts: ['*'] },
  { name: 'AllowInternetOutBound', priority: 65001, direction: 'Outbound', access: 'Allow', protocol: '*', sourcePrefixes: ['*'], destinationPrefixes: ['Internet'], destinationPorts: ['*'] },
  { name: 'DenyAllOutBound', priority: 65500, direction: 'Outbound', access: 'Deny', protocol: '*', sourcePrefixes: ['*'], destinationPrefixes: ['*'], destinationPorts: ['*'] },
];

class AzureView {
  constructor(readonly m: AzureNetworkModel) {}
  vnet(id: string): AzureVnet | undefined {
    return this.m.vnets.find((v) => sameId(v.id, id));
  }
  subnet(id: string): AzureSubnet | undefined {
    for (const v of this.m.vnets) for (const s of v.subnets) if (sameId(s.id, id)) return s;
    return undefined;
  }
  /** Private IPs of the endpoint, else the prefixes of its subnet (where its IP must lie). */
  endpointAddresses(pe: AzurePrivateEndpoint): { ips: string[]; prefixes: string[] } {
    return { ips: pe.ips, prefixes: this.subnet(pe.subnetId)?.prefixes ?? [] };
  }
}

function resolveSubnet(m: AzureNetworkModel, subnet: string, vnet?: string): AzureSubnet | undefined {
  if (subnet.includes('/')) {
    for (const v of m.vnets) for (const s of v.subnets) if (sameId(s.id, subnet)) return s;
    return undefined;
  }
  const candidates = m.vnets
    .filter((v) => !vnet || sameId(v.id, vnet) || lc(v.name) === lc(vnet))
    .flatMap((v) => v.subnets.filter((s) => lc(s.name) === lc(subnet)));
  return candidates.length === 1 ? candidates[0] : undefined;
}

/** Runs every Azure private-network check. Pure and ordered. */
export function checkAzureNetwork(model: AzureNetworkModel, input: AzureCheckInput): Finding[] {
  const v = new AzureView(model);
  const out: Finding[] = [];
  const region = normaliseLocation(input.region);
  const tag = input.deploymentTag ?? TENDER_DEPLOYMENT_TAG;

  // ---- placement
  const subnet = resolveSubnet(model, input.workerSubnet, input.workerVnet);
  if (!subnet) {
    return [finding('placement', 'fail', input.workerSubnet,
      `worker subnet ${input.workerSubnet}${input.workerVnet ? ` in ${input.workerVnet}` : ''} is not in the network data (az network vnet list)${input.workerSubnet.includes('/') || input.workerVnet ? '' : ', or its name is ambiguous without --worker-vnet'}`,
      `give the subnet's resource id in --worker-subnet / worker.placement.${region}.subnet, or its name with --worker-vnet`)];
  }
  const vnet = v.vnet(subnet.vnetId)!;
  const vnetRg = resourceGroupOf(vnet.id);
  if (input.workerVnet && !sameId(input.workerVnet, vnet.id) && lc(input.workerVnet) !== lc(vnet.name)) {
    out.push(finding('placement', 'fail', subnet.id, `worker subnet ${subnet.name} is in VNET ${vnet.name}, not ${input.workerVnet}`,
      `set worker.placement.${region}.network to ${vnet.name}`));
  } else if (normaliseLocation(vnet.location) !== region) {
    out.push(finding('placement', 'fail', vnet.id, `worker VNET ${vnet.name} is in ${vnet.location}, not in ${region}: a worker must be placed in the VM's region`,
      `place the worker in a VNET of ${region}`));
  } else {
    out.push(finding('placement', 'pass', subnet.id, `worker subnet ${subnet.name} (${subnet.prefixes.join(', ')}) in VNET ${vnet.name} (${vnet.location})`));
  }
  const inWorkerVnet = (pe: AzurePrivateEndpoint) => sameId(vnetOfSubnetId(pe.subnetId), vnet.id);
  const peSubnetArgs = `--vnet-name ${vnet.name} --subnet ${subnet.name}`;

  // ---- storage.account: the regional account carrying this deployment's tag
  const tagged = model.storageAccounts.filter((a) => a.tags[tag] === input.deploymentId);
  const account: AzureStorageAccount | undefined = tagged.find((a) => normaliseLocation(a.location) === region);
  if (account) {
    out.push(finding('storage.account', 'pass', account.id, `storage account ${account.name} in ${account.location} has ${tag}=${input.deploymentId}`));
  } else {
    const elsewhere = tagged.map((a) => `${a.name} (${a.location})`);
    out.push(finding('storage.account', 'fail', `${region}/${tag}=${input.deploymentId}`,
      `no storage account in ${region} is tagged ${tag}=${input.deploymentId}${elsewhere.length ? `; tagged accounts are in other regions: ${elsewhere.join(', ')}` : ''}: the worker fetches its bundle and talks to the pipeline through the regional account`,
      `az storage account create -g ${vnetRg} -n <tender${region.slice(0, 10)}xxxx> -l ${region} --sku Standard_LRS --kind StorageV2 --public-network-access Disabled --tags ${tag}=${input.deploymentId}` +
        (tagged.length === 0 && model.storageAccounts.some((a) => normaliseLocation(a.location) === region) ? ` (or tag an existing one: az storage account update -g <rg> -n <name> --tags ${tag}=${input.deploymentId})` : '')));
  }

  // ---- endpoint.blob / endpoint.queue: approved private endpoints in the worker VNET
  const chosen: Partial<Record<'blob' | 'queue', AzurePrivateEndpoint>> = {};
  if (account) {
    for (const group of ['blob', 'queue'] as const) {
      const check = `endpoint.${group}`;
      const pes = model.privateEndpoints.filter((pe) => pe.connections.some((c) => sameId(c.targetId, account.id) && c.groupIds.some((g) => lc(g) === group)));
      const create = `az network private-endpoint create -g ${vnetRg} -n ${account.name}-${group} -l ${region} ${peSubnetArgs} --private-connection-resource-id ${account.id} --group-id ${group} --connection-name ${account.name}-${group}`;
      const local = pes.filter(inWorkerVnet);
      if (local.length === 0) {
        out.push(finding(check, 'fail', account.id,
          pes.length
            ? `the ${group} private endpoints of ${account.name} (${pes.map((p) => p.name).join(', ')}) are not in the worker VNET ${vnet.name}`
            : `storage account ${account.name} has no ${group} private endpoint: the worker cannot reach ${account.name}.${group}.core.windows.net without a public IP`,
          create));
        continue;
      }
      const conn = (pe: AzurePrivateEndpoint) => pe.connections.find((c) => sameId(c.targetId, account.id) && c.groupIds.some((g) => lc(g) === group))!;
      const ok = local.find((pe) => isApproved(conn(pe).status) && lc(pe.provisioningState || 'succeeded') === 'succeeded');
      const pe = ok ?? local[0]!;
      chosen[group] = pe;
      if (ok) out.push(finding(check, 'pass', pe.id, `${pe.name} connects ${account.name} (${group}) into ${vnet.name}/${nameOf(pe.subnetId)}, approved`));
      else {
        const status = conn(pe).status || 'unknown';
        out.push(finding(check, 'fail', pe.id, `${pe.name} for ${account.name} (${group}) is ${status}${pe.provisioningState ? `, provisioning ${pe.provisioningState}` : ''}, not approved`,
          lc(status) === 'pending'
            ? `approve it on the storage account: az network private-endpoint-connection list --id ${account.id}, then az network private-endpoint-connection approve --id <that connection's id>`
            : `delete ${pe.name} and create it again: ${create}`));
      }
    }
  }

  // ---- dns.zone-link: both zones exist and are linked to the worker VNET
  const linkedZones: Record<'blob' | 'queue', string[]> = { blob: [], queue: [] };
  const zoneExists: Record<'blob' | 'queue', boolean> = { blob: false, queue: false };
  for (const group of ['blob', 'queue'] as const) {
    const zoneName = AZURE_DNS_ZONES[group];
    const zones = model.dnsZones.filter((z) => lc(z.name) === zoneName);
    zoneExists[group] = zones.length > 0;
    const linkFix = (zoneRg: string) => `az network private-dns link vnet create -g ${zoneRg} -z ${zoneName} -n ${vnet.name}-link -v ${vnet.id} -e false`;
    if (zones.length === 0) {
      out.push(finding('dns.zone-link', 'fail', zoneName, `private DNS zone ${zoneName} does not exist: ${group} names resolve to public addresses the worker cannot reach`,
        `az network private-dns zone create -g ${vnetRg} -n ${zoneName} ; ${linkFix(vnetRg)}`));
      continue;
    }
    const links = model.dnsLinks.filter((l) => lc(l.zoneName) === zoneName && sameId(l.vnetId, vnet.id) &&
      (!l.zoneId || zones.some((z) => sameId(z.id, l.zoneId))));
    const good = links.filter((l) => lc(l.state) === 'completed' || lc(l.state) === 'succeeded');
    linkedZones[group] = good.map((l) => l.zoneId ?? '');
    if (good.length) out.push(finding('dns.zone-link', 'pass', zoneName, `${zoneName} is linked to ${vnet.name} (${good.map((l) => nameOf(l.id)).join(', ')})`));
    else out.push(finding('dns.zone-link', 'fail', zoneName,
      links.length ? `the link of ${zoneName} to ${vnet.name} is ${links[0]!.state}, not completed` : `${zoneName} is not linked to the worker VNET ${vnet.name}`,
      linkFix(resourceGroupOf(zones[0]!.id))));
  }

  // ---- dns.record: an A record for the account in each zone, pointing at its private endpoint
  if (account) {
    for (const group of ['blob', 'queue'] as const) {
      const pe = chosen[group];
      if (!pe || !zoneExists[group]) continue;
      const zoneName = AZURE_DNS_ZONES[group];
      const zones = model.dnsZones.filter((z) => lc(z.name) === zoneName);
      const linked = zones.filter((z) => linkedZones[group].some((id) => !id || sameId(id, z.id)));
      const searchZones = linked.length ? linked : zones;
      const records = model.dnsARecords.filter((r) => lc(r.zoneName) === zoneName && lc(r.name) === lc(account.name) &&
        (!r.zoneId || searchZones.some((z) => sameId(z.id, r.zoneId))));
      const { ips, prefixes } = v.endpointAddresses(pe);
      const pointsAtPe = (ip: string) => (ips.length ? ips.includes(ip) : prefixes.some((p) => cidrContains(p, ip)));
      const zoneRg = resourceGroupOf(searchZones[0]!.id);
      const addRecord = `az network private-dns record-set a add-record -g ${zoneRg} -z ${zoneName} -n ${account.name} -a ${ips[0] ?? `<private IP of ${pe.name}>`}` +
        ` (or let Azure keep it: az network private-endpoint dns-zone-group create -g ${resourceGroupOf(pe.id)} --endpoint-name ${pe.name} -n default --private-dns-zone ${searchZones[0]!.id} --zone-name ${group})`;
      const fqdn = `${account.name}.${zoneName}`;
      if (records.length === 0) {
        out.push(finding('dns.record', 'fail', fqdn, `no A record ${account.name} in ${zoneName}: ${account.name}.${group}.core.windows.net will not resolve to ${pe.name}`, addRecord));
      } else if (records.some((r) => r.ips.some(pointsAtPe))) {
        out.push(finding('dns.record', 'pass', fqdn, `${fqdn} → ${records.flatMap((r) => r.ips).join(', ')} (${pe.name})`));
      } else {
        out.push(finding('dns.record', 'fail', fqdn,
          `${fqdn} points at ${records.flatMap((r) => r.ips).join(', ') || 'no address'}, not at ${pe.name} (${ips.length ? ips.join(', ') : `an address in ${prefixes.join(', ')}`})`,
          `az network private-dns record-set a remove-record -g ${zoneRg} -z ${zoneName} -n ${account.name} -a ${records.flatMap((r) => r.ips)[0] ?? '<old ip>'} ; ${addRecord}`));
      }
    }
  }

  // ---- endpoint.disk-access: a regional disk access with an approved private endpoint in the worker VNET
  let diskPe: AzurePrivateEndpoint | undefined;
  const accesses = model.diskAccesses.filter((d) => normaliseLocation(d.location) === region);
  if (accesses.length === 0) {
    out.push(finding('endpoint.disk-access', 'fail', region,
      `no disk-access resource in ${region}: snapshot reads through SAS leave the VNET without one`,
      `az disk-access create -g ${vnetRg} -n tender-disk-access-${region} -l ${region} ; az network private-endpoint create -g ${vnetRg} -n tender-disk-access-${region} -l ${region} ${peSubnetArgs} --private-connection-resource-id <the disk access id> --group-id disks --connection-name tender-disk-access`));
  } else {
    const candidates = accesses.flatMap((da) =>
      model.privateEndpoints
        .filter((pe) => inWorkerVnet(pe) && pe.connections.some((c) => sameId(c.targetId, da.id) && c.groupIds.some((g) => lc(g) === 'disks')))
        .map((pe) => {
          const c = pe.connections.find((x) => sameId(x.targetId, da.id))!;
          const daSide = da.connections.find((x) => sameId(x.privateEndpointId, pe.id));
          return { da, pe, approved: isApproved(c.status) || (!!daSide && isApproved(daSide.status)), status: daSide?.status || c.status };
        }));
    const ok = candidates.find((c) => c.approved);
    if (ok) {
      diskPe = ok.pe;
      out.push(finding('endpoint.disk-access', 'pass', ok.da.id, `disk access ${ok.da.name} reachable through ${ok.pe.name} in ${vnet.name}, approved`));
    } else if (candidates.length) {
      const c = candidates[0]!;
      diskPe = c.pe;
      out.push(finding('endpoint.disk-access', 'fail', c.pe.id, `${c.pe.name} to disk access ${c.da.name} is ${c.status || 'not approved'}, not approved`,
        `az network private-endpoint-connection list --id ${c.da.id}, then az network private-endpoint-connection approve --id <that connection's id>`));
    } else {
      const da = accesses[0]!;
      out.push(finding('endpoint.disk-access', 'fail', da.id, `disk access ${da.name} has no private endpoint in the worker VNET ${vnet.name}`,
        `az network private-endpoint create -g ${vnetRg} -n ${da.name}-pe -l ${region} ${peSubnetArgs} --private-connection-resource-id ${da.id} --group-id disks --connection-name ${da.name}-pe`));
    }
  }

  // ---- nsg.worker-egress-443: the worker subnet's NSG lets tcp/443 out to the private endpoints
  const source = subnet.prefixes[0] ?? vnet.prefixes[0] ?? '0.0.0.0/0';
  if (!subnet.nsgId) {
    out.push(finding('nsg.worker-egress-443', 'pass', subnet.id, `no NSG on ${subnet.name}: outbound tcp/443 inside the VNET is allowed by default`));
  } else {
    const nsg = model.nsgs.find((n) => sameId(n.id, subnet.nsgId));
    if (!nsg) {
      out.push(finding('nsg.worker-egress-443', 'warn', subnet.nsgId, `NSG ${nameOf(subnet.nsgId)} of ${subnet.name} is not in the data (az network nsg list)`, 'add the NSG list of its subscription'));
    } else {
      const hasDefaults = nsg.rules.some((r) => r.priority >= 65000);
      const effective: AzureNsg = hasDefaults ? nsg : { ...nsg, rules: [...nsg.rules, ...AZURE_DEFAULT_OUTBOUND_RULES] };
      const peTargets = [chosen.blob, chosen.queue, diskPe].filter((p): p is AzurePrivateEndpoint => !!p);
      const all = [...new Set(peTargets.length
        ? peTargets.flatMap((pe) => (pe.ips.length ? pe.ips.map((ip) => `${ip}/32`) : v.subnet(pe.subnetId)?.prefixes ?? []))
        : vnet.prefixes)];
      // An endpoint's /32 inside another endpoint's subnet needs no rule of its own.
      const dests = all.filter((d) => !all.some((o) => o !== d && cidrContains(o, d)));
      const blocked = dests.map((d) => ({ d, rule: effectiveOutboundRule(effective, source, d, vnet.prefixes) })).filter((x) => x.rule?.access !== 'Allow');
      if (blocked.length === 0) {
        out.push(finding('nsg.worker-egress-443', 'pass', nsg.id, `${nsg.name} allows tcp/443 from ${source} to ${dests.join(', ')}`));
      } else {
        const deny = blocked.find((b) => b.rule)?.rule;
        const priority = Math.max(100, Math.min(4096, (deny?.priority ?? 4097) - 1));
        out.push(finding('nsg.worker-egress-443', 'fail', nsg.id,
          `${nsg.name} blocks tcp/443 from the worker subnet ${source} to ${blocked.map((b) => `${b.d}${b.rule ? ` (rule ${b.rule.name}, priority ${b.rule.priority})` : ''}`).join(', ')}`,
          `az network nsg rule create -g ${resourceGroupOf(nsg.id)} --nsg-name ${nsg.name} -n AllowTenderPrivateEndpoints443 --priority ${priority} --direction Outbound --access Allow --protocol Tcp --source-address-prefixes ${source} --destination-address-prefixes ${blocked.map((b) => b.d).join(' ')} --destination-port-ranges 443`));
      }
    }
  }
  return out;
}

/** The preflight the pipeline runs before deploying a worker in private mode on Azure. Pure. */
export function preflightAzure(
  model: AzureNetworkModel,
  placement: Placement,
  opts: { region?: string; deploymentId?: string; deploymentTag?: string } = {},
): Finding[] {
  return checkAzureNetwork(model, {
    region: opts.region ?? model.region,
    workerSubnet: placement.subnet,
    workerVnet: placement.network,
    // The config's applianceId, whose default is `tender`.
    deploymentId: opts.deploymentId ?? 'tender',
    deploymentTag: opts.deploymentTag,
  });
}
