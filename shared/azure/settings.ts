// The deployment's Azure settings: where Tender makes things and how it
// reaches them. Read once at cold start from the Function app's application
// settings (TENDER_AZURE_*), checked strictly, with messages that name the
// setting and the fix.

import { z } from 'zod';
import { ConfigError } from '../core/errors.js';

const ResourceId = z.string().regex(/^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/.+/i, 'must be an ARM resource id (/subscriptions/…/resourceGroups/…/providers/…)');

export const AzureSettingsSchema = z.strictObject({
  subscriptionId: z.guid('must be the subscription id (a GUID)'),
  /** Where Tender makes snapshots, workers, regional storage accounts and disk accesses. */
  resourceGroup: z.string().min(1),
  /** The deployment id: the value of the tender:appliance tag on what this deployment owns. */
  applianceId: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be lowercase letters, digits and dashes'),
  /**
   * Snapshots are readable only through a disk access's private endpoint and
   * regional storage accounts refuse public networks. Policies may still ask
   * for public workers (worker.privateNetwork: false).
   */
  privateNetwork: z.boolean().default(true),
  /** Private DNS zones Tender attaches to the private endpoints it creates; without one it checks and says what is missing. */
  privateDnsZoneIds: z.strictObject({ blob: ResourceId.optional(), queue: ResourceId.optional() }).default({}),
  /** The user-assigned identity the worker VM runs as: repository writes and Key Vault reads. */
  workerIdentity: z.strictObject({ id: ResourceId, clientId: z.guid() }).optional(),
  /** `https` in Azure; `https,http` only against the storage emulator. */
  sasProtocol: z.enum(['https', 'https,http']).default('https'),
  /** Lifetime of the bundle SAS: the Run Command downloads within minutes. */
  bundleSasTtlSeconds: z.number().int().min(60).max(3600).default(900),
  /** A running job silent for longer than this has failed. */
  heartbeatTimeoutSeconds: z.number().int().min(30).default(300),
  /** The storage endpoint suffix (sovereign clouds differ). */
  storageSuffix: z.string().default('core.windows.net'),
  /** The worker image; default Ubuntu 22.04 LTS (gen 2). */
  workerImage: z
    .strictObject({ publisher: z.string(), offer: z.string(), sku: z.string(), version: z.string().default('latest') })
    .default({ publisher: 'Canonical', offer: '0001-com-ubuntu-server-jammy', sku: '22_04-lts-gen2', version: 'latest' }),
  /** Name of the state container in the Function app's storage account. */
  stateContainer: z.string().default('tender-state'),
});
export type AzureSettings = z.infer<typeof AzureSettingsSchema>;

export function parseAzureSettings(raw: unknown): AzureSettings {
  const res = AzureSettingsSchema.safeParse(raw);
  if (!res.success) {
    const lines = res.error.issues.map((i) => `${i.path.join('.') || '(settings)'} ${i.message}`);
    throw new ConfigError(`the Azure settings are not valid:\n  - ${lines.join('\n  - ')}\nSet them as application settings of the Function app (see docs/azure.md, "Settings")`);
  }
  return res.data;
}

const ENV: Record<string, { key: keyof AzureSettings; parse?: (v: string) => unknown }> = {
  TENDER_AZURE_SUBSCRIPTION_ID: { key: 'subscriptionId' },
  TENDER_AZURE_RESOURCE_GROUP: { key: 'resourceGroup' },
  TENDER_APPLIANCE_ID: { key: 'applianceId' },
  TENDER_AZURE_PRIVATE_NETWORK: { key: 'privateNetwork', parse: (v) => !/^(false|0|no)$/i.test(v) },
  TENDER_AZURE_SAS_PROTOCOL: { key: 'sasProtocol' },
  TENDER_AZURE_BUNDLE_SAS_TTL_SECONDS: { key: 'bundleSasTtlSeconds', parse: Number },
  TENDER_AZURE_HEARTBEAT_TIMEOUT_SECONDS: { key: 'heartbeatTimeoutSeconds', parse: Number },
  TENDER_AZURE_STORAGE_SUFFIX: { key: 'storageSuffix' },
  TENDER_AZURE_STATE_CONTAINER: { key: 'stateContainer' },
};

/** Settings from application settings (environment variables). */
export function azureSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): AzureSettings {
  const raw: Record<string, unknown> = {};
  for (const [name, { key, parse }] of Object.entries(ENV)) {
    const v = env[name]?.trim();
    if (v) raw[key] = parse ? parse(v) : v;
  }
  const zones: Record<string, string> = {};
  if (env.TENDER_AZURE_BLOB_DNS_ZONE_ID) zones.blob = env.TENDER_AZURE_BLOB_DNS_ZONE_ID.trim();
  if (env.TENDER_AZURE_QUEUE_DNS_ZONE_ID) zones.queue = env.TENDER_AZURE_QUEUE_DNS_ZONE_ID.trim();
  raw.privateDnsZoneIds = zones;
  if (env.TENDER_AZURE_WORKER_IDENTITY_ID || env.TENDER_AZURE_WORKER_IDENTITY_CLIENT_ID) {
    raw.workerIdentity = { id: env.TENDER_AZURE_WORKER_IDENTITY_ID?.trim(), clientId: env.TENDER_AZURE_WORKER_IDENTITY_CLIENT_ID?.trim() };
  }
  return parseAzureSettings(raw);
}
