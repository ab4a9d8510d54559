// Every port the pipeline needs, on Azure: built once per Function app
// instance (module scope in azure/index.ts) so warm invocations reuse the
// clients. Everything is injectable; tests pass mocked ARM clients, Azurite
// storage and an in-memory state store.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TokenCredential } from '@azure/identity';
import type { ContainerClient } from '@azure/storage-blob';
import type { CloudPorts } from '../ports/cloud.js';
import type { RestorePoints } from '../ports/restore-points.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { ConfigError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { AzureNetworkModel } from '../core/network/types.js';
import { silentLogger } from '../core/logger.js';
import { defaultArmClients, type ArmClients } from './clients.js';
import { createRegions, type Regions } from './region.js';
import { createAzureSnapshots } from './snapshots.js';
import { createAzureWorkers, type WorkerBundleFile } from './workers.js';
import { createAzureCatalog } from './catalog.js';
import { createBlobStateStore, type StateStore } from './state-store.js';
import { keyBasedStorage, type StorageFor } from './storage.js';
import { createAzureRestorePoints } from './restore-points.js';
import type { AzureSettings } from './settings.js';

export interface AzureCloudOptions {
  settings: AzureSettings;
  arm?: ArmClients;
  credential?: TokenCredential;
  /** Where run state lives; default the Function app's own storage account (AzureWebJobsStorage). */
  state?: StateStore;
  storageFor?: StorageFor;
  regions?: Regions;
  bundle?: () => Promise<WorkerBundleFile>;
  restorePoints?: RestorePoints;
  clock?: Clock;
  logger?: Logger;
  fetch?: typeof fetch;
  env?: NodeJS.ProcessEnv;
  /** Reads a region's network for the private-network preflight (default: the live reader of `tender check-network azure`). */
  readNetwork?: (region: string) => Promise<AzureNetworkModel>;
}

export type AzureCloud = CloudPorts & { restorePoints: RestorePoints };

/** The bundle file shipped next to the Function app (dist/azure/worker/tender-worker.tgz), its digest taken once. */
export function fileBundle(path: string): () => Promise<WorkerBundleFile> {
  let p: Promise<WorkerBundleFile> | undefined;
  return () =>
    (p ??= (async () => {
      let data: Buffer;
      try {
        data = await readFile(path);
      } catch (e) {
        p = undefined;
        throw new ConfigError(`the worker bundle ${path} is missing — build it with node scripts/build-azure.mjs before deploying`, { cause: e });
      }
      return { fileName: 'tender-worker.tgz', sha256: createHash('sha256').update(data).digest('hex'), data };
    })());
}

/** The Function app's storage account, from AzureWebJobsStorage (connection string or identity-based). */
export async function functionAppContainer(name: string, env: NodeJS.ProcessEnv, credential?: TokenCredential): Promise<ContainerClient> {
  const { BlobServiceClient } = await import('@azure/storage-blob');
  const conn = env.AzureWebJobsStorage?.trim();
  if (conn) return BlobServiceClient.fromConnectionString(conn).getContainerClient(name);
  const account = env.AzureWebJobsStorage__accountName?.trim();
  const blobUri = env.AzureWebJobsStorage__blobServiceUri?.trim() ?? (account ? `https://${account}.blob.core.windows.net` : undefined);
  if (!blobUri) throw new ConfigError('neither AzureWebJobsStorage nor AzureWebJobsStorage__accountName is set: the Function app has no storage account for Tender\'s run state');
  const cred = credential ?? new (await import('@azure/identity')).DefaultAzureCredential();
  return new BlobServiceClient(blobUri, cred).getContainerClient(name);
}

export async function createAzureCloud(opts: AzureCloudOptions): Promise<AzureCloud> {
  const { settings } = opts;
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger;
  const env = opts.env ?? process.env;
  const armClients = opts.arm ?? (await defaultArmClients(settings.subscriptionId, opts.credential));
  const credential = opts.credential ?? (armClients as { credential?: TokenCredential }).credential;
  const state = opts.state ?? createBlobStateStore({ container: await functionAppContainer(settings.stateContainer, env, credential) });
  const regions = opts.regions ?? createRegions({ arm: armClients, settings, logger });
  const storageFor = opts.storageFor ?? keyBasedStorage({ storage: armClients.storage, resourceGroup: settings.resourceGroup });
  // The Functions host runs the app from its package root, where the build put worker/tender-worker.tgz.
  const bundle = opts.bundle ?? fileBundle(env.TENDER_WORKER_BUNDLE ?? join(process.cwd(), 'worker', 'tender-worker.tgz'));
  const mode = (env.TENDER_NETWORK_PREFLIGHT?.trim() || 'enforce') as 'enforce' | 'warn' | 'off';
  if (!['enforce', 'warn', 'off'].includes(mode)) throw new ConfigError(`TENDER_NETWORK_PREFLIGHT is "${mode}": use enforce, warn or off`);
  const readNetwork =
    opts.readNetwork ??
    (async (region: string) => {
      const { createAzureNetworkReader } = await import('./network-reader.js');
      return createAzureNetworkReader({ region, subscriptionId: settings.subscriptionId, credential }).read();
    });
  const workers = createAzureWorkers({ arm: armClients, settings, regions, storageFor, state, bundle, clock, logger, fetch: opts.fetch, preflight: mode, readNetwork });
  return {
    snapshots: createAzureSnapshots({ arm: armClients, settings, regions, clock, logger }),
    workers,
    channel: workers,
    access: workers,
    catalog: createAzureCatalog({ state }),
    restorePoints: opts.restorePoints ?? createAzureRestorePoints({ credential }),
  };
}
