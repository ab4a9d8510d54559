// Reads an Azure network into the model the private-network checks use: from
// the JSON the Azure CLI prints (--from DIR), or live through injected
// management clients. The CLI prints resources with their `properties`
// flattened, as the SDKs return them; ARM REST nests them under `properties`.
// The normaliser accepts both, so one code path serves files, SDK and REST.
//
// Files (--from DIR), each named after its command (the words after `az`,
// joined by dashes). Per-zone commands may be appended into one file (>>):
//
//   network-vnet-list.json                  az network vnet list -o json
//   network-nsg-list.json                   az network nsg list -o json
//   network-private-endpoint-list.json      az network private-endpoint list -o json
//   storage-account-list.json               az storage account list -o json
//   disk-access-list.json                   az disk-access list -o json
//   network-private-dns-zone-list.json      az network private-dns zone list -o json
//   network-private-dns-link-vnet-list.json az network private-dns link vnet list -g RG -z ZONE -o json   (per zone)
//   network-private-dns-record-set-a-list.json
//                                           az network private-dns record-set a list -g RG -z ZONE -o json (per zone)

import type { TokenCredential } from '@azure/identity';
import { AccessDeniedError, ConfigError, NotFoundError, TransientError, toError } from '../core/errors.js';
import { collectItems, parseJsonDocuments, readCliOutputFile } from '../core/network/json-documents.js';
import { AZURE_DNS_ZONES, normaliseLocation } from '../core/network/azure-checks.js';
import type {
  AzureDiskAccess,
  AzureDnsARecord,
  AzureDnsLink,
  AzureDnsZone,
  AzureNetworkModel,
  AzureNsg,
  AzureNsgRule,
  AzurePrivateEndpoint,
  AzurePrivateLinkConnection,
  AzureStorageAccount,
  AzureVnet,
} from '../core/network/types.js';

export const AZURE_NETWORK_FILES = {
  vnets: { file: 'network-vnet-list.json', command: 'az network vnet list -o json' },
  nsgs: { file: 'network-nsg-list.json', command: 'az network nsg list -o json' },
  privateEndpoints: { file: 'network-private-endpoint-list.json', command: 'az network private-endpoint list -o json' },
  storageAccounts: { file: 'storage-account-list.json', command: 'az storage account list -o json' },
  diskAccesses: { file: 'disk-access-list.json', command: 'az disk-access list -o json' },
  dnsZones: { file: 'network-private-dns-zone-list.json', command: 'az network private-dns zone list -o json' },
  dnsLinks: { file: 'network-private-dns-link-vnet-list.json', command: 'az network private-dns link vnet list -g RG -z ZONE -o json (once per zone, appended)' },
  dnsARecords: { file: 'network-private-dns-record-set-a-list.json', command: 'az network private-dns record-set a list -g RG -z ZONE -o json (once per zone, appended)' },
} as const;

export type AzureNetworkPart = keyof typeof AZURE_NETWORK_FILES;
export type AzureListItems = Record<AzureNetworkPart, Record<string, unknown>[]>;

type Raw = Record<string, any>;

const str = (x: unknown): string | undefined => (typeof x === 'string' && x !== '' ? x : undefined);
const arr = (x: unknown): Raw[] => (Array.isArray(x) ? (x.filter((i) => i && typeof i === 'object') as Raw[]) : []);
const strs = (x: unknown): string[] => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string' && s !== '') : []);
/** The resource with `properties` lifted (ARM REST) — flattened input passes unchanged. */
const flat = (x: Raw): Raw => (x && typeof x.properties === 'object' && x.properties ? { ...x.properties, ...x } : x);

function need(item: Raw, field: string, part: AzureNetworkPart): string {
  const v = str(item[field]);
  if (!v) {
    const { file, command } = AZURE_NETWORK_FILES[part];
    throw new ConfigError(`${file}: an entry has no "${field}" — is this the unmodified output of \`${command}\`?`);
  }
  return v;
}

/** `…/privateDnsZones/<zone>/…` → zone name and zone id. */
function zoneFromId(id: string): { zoneName?: string; zoneId?: string } {
  const m = /^(.*\/privateDnsZones\/([^/]+))/i.exec(id);
  return m ? { zoneId: m[1], zoneName: m[2]!.toLowerCase() } : {};
}

function nsgRule(r0: Raw, defaultRule: boolean): AzureNsgRule | undefined {
  const r = flat(r0);
  const direction = str(r.direction);
  const access = str(r.access);
  if (!direction || !access) return undefined;
  const pick = (one: unknown, many: unknown) => [...strs(many), ...(str(one) ? [one as string] : [])];
  return {
    name: str(r.name) ?? (defaultRule ? 'default' : 'rule'),
    priority: typeof r.priority === 'number' ? r.priority : Number(r.priority ?? 65500),
    direction: direction.toLowerCase() === 'outbound' ? 'Outbound' : 'Inbound',
    access: access.toLowerCase() === 'allow' ? 'Allow' : 'Deny',
    protocol: str(r.protocol) ?? '*',
    sourcePrefixes: pick(r.sourceAddressPrefix, r.sourceAddressPrefixes),
    destinationPrefixes: pick(r.destinationAddressPrefix, r.destinationAddressPrefixes),
    destinationPorts: pick(r.destinationPortRange, r.destinationPortRanges),
  };
}

function connections(pe: Raw): AzurePrivateLinkConnection[] {
  return [...arr(pe.privateLinkServiceConnections), ...arr(pe.manualPrivateLinkServiceConnections)].map((c0) => {
    const c = flat(c0);
    return {
      targetId: str(c.privateLinkServiceId) ?? '',
      groupIds: strs(c.groupIds),
      status: str(c.privateLinkServiceConnectionState?.status) ?? '',
    };
  });
}

/** Pure: raw list items → model. Duplicates (appended twice) count once. */
export function normaliseAzureNetwork(items: AzureListItems, region: string): AzureNetworkModel {
  const raw = items as unknown as Record<AzureNetworkPart, Raw[]>;
  const dedupe = <T>(xs: T[], id: (t: T) => string) => [...new Map(xs.map((t) => [id(t).toLowerCase(), t])).values()];

  const vnets: AzureVnet[] = raw.vnets.map(flat).map((v) => {
    const id = need(v, 'id', 'vnets');
    return {
      id,
      name: str(v.name) ?? id.split('/').pop()!,
      location: str(v.location) ?? '',
      prefixes: strs(v.addressSpace?.addressPrefixes),
      subnets: arr(v.subnets).map(flat).map((s) => ({
        id: str(s.id) ?? `${id}/subnets/${s.name}`,
        name: str(s.name) ?? '',
        vnetId: id,
        prefixes: [...new Set([...(str(s.addressPrefix) ? [s.addressPrefix as string] : []), ...strs(s.addressPrefixes)])],
        nsgId: str(s.networkSecurityGroup?.id),
      })),
    };
  });

  const nsgs: AzureNsg[] = raw.nsgs.map(flat).map((n) => ({
    id: need(n, 'id', 'nsgs'),
    name: str(n.name) ?? '',
    rules: [
      ...arr(n.securityRules).map((r) => nsgRule(r, false)),
      ...arr(n.defaultSecurityRules).map((r) => nsgRule(r, true)),
    ].filter((r): r is AzureNsgRule => !!r),
  }));

  const privateEndpoints: AzurePrivateEndpoint[] = raw.privateEndpoints.map(flat).map((pe) => ({
    id: need(pe, 'id', 'privateEndpoints'),
    name: str(pe.name) ?? '',
    location: str(pe.location) ?? '',
    subnetId: str(pe.subnet?.id) ?? '',
    ips: [...new Set([
      ...arr(pe.customDnsConfigs).flatMap((c) => strs(c.ipAddresses)),
      ...arr(pe.ipConfigurations).map(flat).map((c) => str(c.privateIPAddress)).filter((x): x is string => !!x),
    ])],
    provisioningState: str(pe.provisioningState) ?? '',
    connections: connections(pe),
  }));

  const storageAccounts: AzureStorageAccount[] = raw.storageAccounts.map(flat).map((a) => ({
    id: need(a, 'id', 'storageAccounts'),
    name: str(a.name) ?? '',
    location: str(a.location) ?? '',
    tags: Object.fromEntries(Object.entries((a.tags ?? {}) as Record<string, unknown>).filter(([, v]) => typeof v === 'string')) as Record<string, string>,
  }));

  const diskAccesses: AzureDiskAccess[] = raw.diskAccesses.map(flat).map((d) => ({
    id: need(d, 'id', 'diskAccesses'),
    name: str(d.name) ?? '',
    location: str(d.location) ?? '',
    connections: arr(d.privateEndpointConnections).map(flat).map((c) => ({
      privateEndpointId: str(c.privateEndpoint?.id) ?? '',
      status: str(c.privateLinkServiceConnectionState?.status) ?? '',
    })),
  }));

  const dnsZones: AzureDnsZone[] = raw.dnsZones.map(flat).map((z) => ({ id: need(z, 'id', 'dnsZones'), name: (str(z.name) ?? '').toLowerCase() }));

  const dnsLinks: AzureDnsLink[] = raw.dnsLinks.map(flat).map((l) => {
    const id = need(l, 'id', 'dnsLinks');
    const zone = zoneFromId(id);
    return {
      id,
      zoneName: zone.zoneName ?? '',
      zoneId: zone.zoneId,
      vnetId: str(l.virtualNetwork?.id) ?? '',
      state: str(l.virtualNetworkLinkState) ?? str(l.provisioningState) ?? '',
    };
  });

  const dnsARecords: AzureDnsARecord[] = raw.dnsARecords.map(flat).map((r) => {
    const id = need(r, 'id', 'dnsARecords');
    const zone = zoneFromId(id);
    const fqdnZone = str(r.fqdn)?.replace(/\.$/, '').split('.').slice(1).join('.').toLowerCase();
    return {
      zoneName: zone.zoneName ?? fqdnZone ?? '',
      zoneId: zone.zoneId,
      name: str(r.name) ?? id.split('/').pop()!,
      ips: arr(r.aRecords ?? r.ARecords).map((a) => str(a.ipv4Address)).filter((x): x is string => !!x),
    };
  });

  return {
    region: normaliseLocation(region),
    vnets: dedupe(vnets, (x) => x.id),
    nsgs: dedupe(nsgs, (x) => x.id),
    privateEndpoints: dedupe(privateEndpoints, (x) => x.id),
    storageAccounts: dedupe(storageAccounts, (x) => x.id),
    diskAccesses: dedupe(diskAccesses, (x) => x.id),
    dnsZones: dedupe(dnsZones, (x) => x.id),
    dnsLinks: dedupe(dnsLinks, (x) => x.id),
    dnsARecords: dedupe(dnsARecords, (x) => `${x.zoneId ?? x.zoneName}/${x.name}`),
  };
}

export function parseAzureListFile(part: AzureNetworkPart, text: string): Record<string, unknown>[] {
  const { file, command } = AZURE_NETWORK_FILES[part];
  const how = `${command} > ${file}`;
  return collectItems(parseJsonDocuments(text, file, how), file, undefined, how);
}

/** Reads the eight list files from `dir`. Missing, unreadable or malformed files are ConfigErrors naming the file. */
export async function readAzureNetworkFromDir(dir: string, region: string): Promise<AzureNetworkModel> {
  const raw = {} as AzureListItems;
  for (const part of Object.keys(AZURE_NETWORK_FILES) as AzureNetworkPart[]) {
    const { file, command } = AZURE_NETWORK_FILES[part];
    const text = await readCliOutputFile(dir, file, `${command} > ${file}`);
    raw[part] = parseAzureListFile(part, text);
  }
  return normaliseAzureNetwork(raw, region);
}

// ---------------------------------------------------------------- live

/** The parts of @azure/arm-network, arm-storage and arm-compute clients the reader uses (real clients fit). */
export interface NetworkClientLike {
  virtualNetworks: { listAll(): AsyncIterable<unknown> };
  networkSecurityGroups: { listAll(): AsyncIterable<unknown> };
  privateEndpoints: { listBySubscription(): AsyncIterable<unknown> };
}
export interface StorageClientLike {
  storageAccounts: { list(): AsyncIterable<unknown> };
}
export interface ComputeClientLike {
  diskAccesses: { list(): AsyncIterable<unknown> };
}
/**
 * Private DNS zones live in Microsoft.Network/privateDnsZones, which
 * arm-network does not cover (that is @azure/arm-privatedns, not a dependency):
 * the default lister calls ARM's REST API with the same credential.
 */
export interface AzurePrivateDnsLister {
  listZones(): AsyncIterable<unknown>;
  listVnetLinks(zoneId: string): AsyncIterable<unknown>;
  listARecords(zoneId: string): AsyncIterable<unknown>;
}

export function normaliseAzureError(thrown: unknown, what: string): Error {
  const err = toError(thrown) as Error & { statusCode?: number; code?: string };
  const status = err.statusCode;
  if (status === 429 || (status !== undefined && status >= 500) || /timeout|ETIMEDOUT|ECONNRESET|EAI_AGAIN/i.test(`${err.name} ${err.code ?? ''}`)) {
    return new TransientError(`${what} failed transiently (${status ?? err.code ?? err.name}): run the check again`, { cause: err });
  }
  if (status === 401 || status === 403 || err.name === 'CredentialUnavailableError' || err.name === 'AuthenticationError') {
    return new AccessDeniedError(`${what} was denied (${err.message}): the identity needs Reader on the subscription — or list the resources with the Azure CLI and pass --from DIR`, { cause: err });
  }
  if (status === 404) return new NotFoundError(`${what}: not found (${err.message}) — check the subscription id`, { cause: err });
  return err;
}

const ARM = 'https://management.azure.com';
const PRIVATE_DNS_API = '2018-09-01';

/** Lists private DNS zones, links and A records through ARM REST, following nextLink. */
export function createArmPrivateDnsLister(opts: {
  credential: TokenCredential;
  subscriptionId: string;
  fetch?: typeof fetch;
  endpoint?: string;
}): AzurePrivateDnsLister {
  const doFetch = opts.fetch ?? fetch;
  const base = opts.endpoint ?? ARM;
  async function* pages(url: string): AsyncIterable<unknown> {
    let next: string | undefined = url;
    while (next) {
      const token = await opts.credential.getToken(`${base}/.default`);
      if (!token) throw new AccessDeniedError(`no token for ${base}: sign in (az login) or pass --from DIR`);
      const res = await doFetch(next, { headers: { authorization: `Bearer ${token.token}` } });
      if (!res.ok) throw Object.assign(new Error(`GET ${next.split('?')[0]} answered ${res.status}`), { statusCode: res.status });
      const body = (await res.json()) as { value?: unknown[]; nextLink?: string };
      yield* body.value ?? [];
      next = body.nextLink;
    }
  }
  return {
    listZones: () => pages(`${base}/subscriptions/${opts.subscriptionId}/providers/Microsoft.Network/privateDnsZones?api-version=${PRIVATE_DNS_API}`),
    listVnetLinks: (zoneId) => pages(`${base}${zoneId}/virtualNetworkLinks?api-version=${PRIVATE_DNS_API}`),
    listARecords: (zoneId) => pages(`${base}${zoneId}/A?api-version=${PRIVATE_DNS_API}`),
  };
}

export interface AzureNetworkReader {
  read(): Promise<AzureNetworkModel>;
}

/**
 * Live reader. Clients are injected (tests pass fakes); when one is missing it
 * is built from `credential` (default DefaultAzureCredential) and `subscriptionId`.
 */
export function createAzureNetworkReader(opts: {
  region: string;
  subscriptionId?: string;
  credential?: TokenCredential;
  network?: NetworkClientLike;
  storage?: StorageClientLike;
  compute?: ComputeClientLike;
  privateDns?: AzurePrivateDnsLister;
}): AzureNetworkReader {
  async function clients() {
    const needsDefault = !opts.network || !opts.storage || !opts.compute || !opts.privateDns;
    if (needsDefault && !opts.subscriptionId) {
      throw new ConfigError('reading Azure live needs a subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID (or use --from DIR)');
    }
    let credential = opts.credential;
    if (needsDefault && !credential) credential = new (await import('@azure/identity')).DefaultAzureCredential();
    const sub = opts.subscriptionId!;
    return {
      network: opts.network ?? (new (await import('@azure/arm-network')).NetworkManagementClient(credential!, sub) as unknown as NetworkClientLike),
      storage: opts.storage ?? (new (await import('@azure/arm-storage')).StorageManagementClient(credential!, sub) as unknown as StorageClientLike),
      compute: opts.compute ?? (new (await import('@azure/arm-compute')).ComputeManagementClient(credential!, sub) as unknown as ComputeClientLike),
      privateDns: opts.privateDns ?? createArmPrivateDnsLister({ credential: credential!, subscriptionId: sub }),
    };
  }
  async function all(what: string, it: () => AsyncIterable<unknown>): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    try {
      for await (const x of it()) if (x && typeof x === 'object') out.push(x as Record<string, unknown>);
    } catch (e) {
      throw normaliseAzureError(e, what);
    }
    return out;
  }
  return {
    async read() {
      const c = await clients();
      const [vnets, nsgs, privateEndpoints, storageAccounts, diskAccesses, dnsZones] = await Promise.all([
        all('listing virtual networks', () => c.network.virtualNetworks.listAll()),
        all('listing network security groups', () => c.network.networkSecurityGroups.listAll()),
        all('listing private endpoints', () => c.network.privateEndpoints.listBySubscription()),
        all('listing storage accounts', () => c.storage.storageAccounts.list()),
        all('listing disk accesses', () => c.compute.diskAccesses.list()),
        all('listing private DNS zones', () => c.privateDns.listZones()),
      ]);
      // Only the zones Tender needs: a subscription may hold hundreds.
      const wanted = new Set<string>(Object.values(AZURE_DNS_ZONES));
      const zoneIds = dnsZones.map((z) => z as Raw).filter((z) => wanted.has(String(z.name ?? '').toLowerCase())).map((z) => String(z.id));
      const dnsLinks: Record<string, unknown>[] = [];
      const dnsARecords: Record<string, unknown>[] = [];
      for (const id of zoneIds) {
        dnsLinks.push(...(await all(`listing VNET links of ${id}`, () => c.privateDns.listVnetLinks(id))));
        dnsARecords.push(...(await all(`listing A records of ${id}`, () => c.privateDns.listARecords(id))));
      }
      return normaliseAzureNetwork({ vnets, nsgs, privateEndpoints, storageAccounts, diskAccesses, dnsZones, dnsLinks, dnsARecords }, opts.region);
    },
  };
}
