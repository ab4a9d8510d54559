// What a worker needs in a region before it starts (seed 000, "Pre-requisites"
// and "Azure VM Backup" step 1): the worker VNET / subnet from the policy's
// placement, the storage account carrying this deployment's tag (created if
// missing), its blob and queue private endpoints in the worker VNET, and a
// disk-access resource (reused, else created) with its own private endpoint
// so snapshot reads stay inside the VNET. Private endpoints are created only
// when the deployment names the private DNS zone to register them in: an
// endpoint nobody resolves to would look fine and fail at the first request,
// so without a zone the check fails and says what to create.

import type { PrivateEndpoint } from '@azure/arm-network';
import type { StorageAccount } from '@azure/arm-storage';
import type { DiskAccess } from '@azure/arm-compute';
import type { Placement } from '../core/config.js';
import { ConfigError, NetworkPreflightError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { TENDER_DEPLOYMENT_TAG } from '../core/network/azure-checks.js';
import { all, type ArmClients } from './clients.js';
import { arm, armMaybe } from './arm-errors.js';
import { diskAccessNameOf, parseResourceId, regionalAccountNameOf } from './names.js';
import type { AzureSettings } from './settings.js';

export interface RegionalAccount {
  id: string;
  name: string;
  blobUrl: string;
  queueUrl: string;
}

export interface WorkerPlacement {
  region: string;
  subnetId: string;
  vnetId: string;
}

export interface RegionEnv extends WorkerPlacement {
  account: RegionalAccount;
  /** Set in private mode: the disk access snapshots of this region are exported through. */
  diskAccessId?: string;
}

const lc = (s: string | undefined) => (s ?? '').toLowerCase();
const sameId = (a?: string, b?: string) => !!a && !!b && lc(a) === lc(b);
export const normaliseRegion = (r: string) => lc(r).replace(/\s+/g, '');

export interface Regions {
  /** The deployment's storage account in `region`, created if missing. */
  account(region: string): Promise<RegionalAccount>;
  /** The deployment's disk access in `region`, reused or created. */
  diskAccess(region: string): Promise<string>;
  /** Everything a worker in `region` needs, checked (and in private mode, endpoints made where a DNS zone is known). */
  prepare(req: { region: string; placement?: Placement; privateNetwork: boolean }): Promise<RegionEnv>;
}

export function createRegions(opts: { arm: ArmClients; settings: AzureSettings; logger: Logger }): Regions {
  const { settings } = opts;
  const rg = settings.resourceGroup;
  const tag = TENDER_DEPLOYMENT_TAG;
  const accounts = new Map<string, Promise<RegionalAccount>>();
  const diskAccesses = new Map<string, Promise<string>>();
  const once = <T>(cache: Map<string, Promise<T>>, key: string, fn: () => Promise<T>): Promise<T> => {
    let p = cache.get(key);
    if (!p) {
      p = fn();
      cache.set(key, p);
      // A failure is not remembered: the next activity tries again.
      p.catch(() => cache.delete(key));
    }
    return p;
  };
  const suffix = settings.storageSuffix;
  const toAccount = (a: StorageAccount): RegionalAccount => ({
    id: a.id!,
    name: a.name!,
    blobUrl: (a.primaryEndpoints?.blob ?? `https://${a.name}.blob.${suffix}/`).replace(/\/$/, ''),
    queueUrl: (a.primaryEndpoints?.queue ?? `https://${a.name}.queue.${suffix}/`).replace(/\/$/, ''),
  });

  async function findOrCreateAccount(region: string): Promise<RegionalAccount> {
    const list = await arm(`listing storage accounts in resource group ${rg}`, () => all(opts.arm.storage.storageAccounts.listByResourceGroup(rg)));
    const found = list.find((a) => a.tags?.[tag] === settings.applianceId && normaliseRegion(a.location ?? '') === region);
    if (found) return toAccount(found);
    const name = regionalAccountNameOf(settings.subscriptionId, settings.applianceId, region);
    opts.logger.info('creating the regional storage account', { region, account: name });
    const created = await arm(`creating storage account ${name} in ${region}`, () =>
      opts.arm.storage.storageAccounts.beginCreateAndWait(rg, name, {
        location: region,
        sku: { name: 'Standard_LRS' },
        kind: 'StorageV2',
        tags: { [tag]: settings.applianceId },
        enableHttpsTrafficOnly: true,
        minimumTlsVersion: 'TLS1_2',
        allowBlobPublicAccess: false,
        // Service SAS with stored access policies is how bundle and queue access is revoked.
        allowSharedKeyAccess: true,
        publicNetworkAccess: settings.privateNetwork ? 'Disabled' : 'Enabled',
      }),
    );
    return toAccount(created);
  }

  async function findOrCreateDiskAccess(region: string): Promise<string> {
    const list = await arm(`listing disk accesses in resource group ${rg}`, () => all(opts.arm.compute.diskAccesses.listByResourceGroup(rg)));
    const found = list.find((d) => d.tags?.[tag] === settings.applianceId && normaliseRegion(d.location ?? '') === region);
    if (found?.id) return found.id;
    const name = diskAccessNameOf(settings.applianceId, region);
    opts.logger.info('creating the regional disk access', { region, diskAccess: name });
    const created: DiskAccess = await arm(`creating disk access ${name} in ${region}`, () =>
      opts.arm.compute.diskAccesses.createOrUpdate(rg, name, { location: region, tags: { [tag]: settings.applianceId } }),
    );
    if (!created.id) throw new ConfigError(`creating disk access ${name} in ${region} returned no id — check the resource group ${rg}`);
    return created.id;
  }

  /** The placement's subnet, resolved and checked to be in the region. */
  async function resolveSubnet(region: string, placement: Placement | undefined): Promise<WorkerPlacement> {
    if (!placement) {
      throw new ConfigError(
        `no worker placement for region ${region}: set worker.placement.${region}.subnet (the subnet's resource id) in the policy, so the worker starts in a VNET of the VM's region`,
      );
    }
    let vnetRg = rg;
    let vnetName: string | undefined;
    let subnetName = placement.subnet;
    if (placement.subnet.includes('/')) {
      const m = /\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Network\/virtualNetworks\/([^/]+)\/subnets\/([^/]+)$/i.exec(placement.subnet);
      if (!m) throw new ConfigError(`worker.placement.${region}.subnet "${placement.subnet}" is not a subnet resource id (…/virtualNetworks/<vnet>/subnets/<subnet>)`);
      [, vnetRg, vnetName, subnetName] = m as unknown as [string, string, string, string];
    } else if (placement.network) {
      const p = placement.network.includes('/') ? parseResourceId(placement.network) : { name: placement.network, resourceGroup: undefined };
      vnetName = p.name;
      vnetRg = p.resourceGroup ?? rg;
    }
    if (!vnetName) {
      throw new ConfigError(`worker.placement.${region}.subnet "${placement.subnet}" is a name: give the subnet's resource id, or its VNET in worker.placement.${region}.network`);
    }
    const subnet = await armMaybe(`reading subnet ${subnetName} of VNET ${vnetName}`, () => opts.arm.network.subnets.get(vnetRg, vnetName!, subnetName));
    if (!subnet?.id) {
      throw new ConfigError(`the worker subnet ${subnetName} of VNET ${vnetName} (resource group ${vnetRg}) does not exist — fix worker.placement.${region}`);
    }
    return { region, subnetId: subnet.id, vnetId: subnet.id.replace(/\/subnets\/[^/]+$/i, '') };
  }

  async function endpointsTo(targetId: string, vnetRgs: string[]): Promise<PrivateEndpoint[]> {
    const out: PrivateEndpoint[] = [];
    for (const g of [...new Set(vnetRgs.map(lc))]) {
      const list = await arm(`listing private endpoints in resource group ${g}`, () => all(opts.arm.network.privateEndpoints.list(g)));
      out.push(...list.filter((pe) => [...(pe.privateLinkServiceConnections ?? []), ...(pe.manualPrivateLinkServiceConnections ?? [])].some((c) => sameId(c.privateLinkServiceId, targetId))));
    }
    return out;
  }

  /**
   * An approved private endpoint to `targetId` (sub-resource `group`) in the
   * worker VNET; created when the deployment names the DNS zone for it.
   */
  async function ensureEndpoint(env: WorkerPlacement, targetId: string, group: 'blob' | 'queue' | 'disks', zoneId: string | undefined): Promise<void> {
    const vnetRg = parseResourceId(env.vnetId).resourceGroup ?? rg;
    const pes = await endpointsTo(targetId, [rg, vnetRg]);
    const conn = (pe: PrivateEndpoint) =>
      [...(pe.privateLinkServiceConnections ?? []), ...(pe.manualPrivateLinkServiceConnections ?? [])].find(
        (c) => sameId(c.privateLinkServiceId, targetId) && (c.groupIds ?? []).some((g) => lc(g) === group),
      );
    const inVnet = pes.filter((pe) => conn(pe) && lc(pe.subnet?.id).startsWith(lc(env.vnetId) + '/subnets/'));
    const ok = inVnet.find((pe) => lc(conn(pe)!.privateLinkServiceConnectionState?.status ?? 'approved') === 'approved' && lc(pe.provisioningState ?? 'succeeded') === 'succeeded');
    if (ok) return;
    const target = parseResourceId(targetId).name;
    const peName = `${target}-${group}-pe`.slice(0, 80);
    if (inVnet.length > 0) {
      const status = conn(inVnet[0]!)!.privateLinkServiceConnectionState?.status ?? 'unknown';
      throw new NetworkPreflightError(
        `the ${group} private endpoint ${inVnet[0]!.name} of ${target} in the worker VNET is ${status}, not approved — approve it: az network private-endpoint-connection approve --id <connection id of ${targetId}>`,
      );
    }
    if (!zoneId) {
      const zone = group === 'queue' ? 'privatelink.queue.core.windows.net' : 'privatelink.blob.core.windows.net';
      throw new NetworkPreflightError(
        `${target} has no ${group} private endpoint in the worker VNET ${parseResourceId(env.vnetId).name}: a worker without a public IP cannot reach it — ` +
          `create it: az network private-endpoint create -g ${vnetRg} -n ${peName} -l ${env.region} --subnet ${env.subnetId} --private-connection-resource-id ${targetId} --group-id ${group} --connection-name ${peName}, ` +
          `and register it in the ${zone} zone linked to the VNET (or set TENDER_AZURE_${group === 'queue' ? 'QUEUE' : 'BLOB'}_DNS_ZONE_ID and Tender creates it)`,
      );
    }
    opts.logger.info('creating a private endpoint', { target, group, subnet: env.subnetId });
    await arm(`creating private endpoint ${peName}`, () =>
      opts.arm.network.privateEndpoints.beginCreateOrUpdateAndWait(rg, peName, {
        location: env.region,
        subnet: { id: env.subnetId },
        privateLinkServiceConnections: [{ name: peName, privateLinkServiceId: targetId, groupIds: [group] }],
        tags: { [tag]: settings.applianceId },
      }),
    );
    await arm(`registering private endpoint ${peName} in DNS`, () =>
      opts.arm.network.privateDnsZoneGroups.beginCreateOrUpdateAndWait(rg, peName, 'default', {
        privateDnsZoneConfigs: [{ name: group, privateDnsZoneId: zoneId }],
      }),
    );
  }

  const regions: Regions = {
    account: (region) => once(accounts, normaliseRegion(region), () => findOrCreateAccount(normaliseRegion(region))),
    diskAccess: (region) => once(diskAccesses, normaliseRegion(region), () => findOrCreateDiskAccess(normaliseRegion(region))),
    async prepare(req) {
      const region = normaliseRegion(req.region);
      const placement = await resolveSubnet(region, req.placement);
      const account = await regions.account(region);
      if (!req.privateNetwork) return { ...placement, account };
      const zones = settings.privateDnsZoneIds;
      await ensureEndpoint(placement, account.id, 'blob', zones.blob);
      await ensureEndpoint(placement, account.id, 'queue', zones.queue);
      // A private policy's snapshots are exported through the disk access (snapshots.ts): its
      // worker reads them through the disk access's private endpoint.
      const diskAccessId = await regions.diskAccess(region);
      await ensureEndpoint(placement, diskAccessId, 'disks', zones.blob);
      return { ...placement, account, diskAccessId };
    },
  };
  return regions;
}
