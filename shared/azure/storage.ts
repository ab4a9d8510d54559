// Data-plane clients for a regional storage account. The SAS handed to the
// worker are service SAS bound to stored access policies (revocable), and a
// service SAS is signed with the account key: the Function app reads it
// through ARM (listKeys) with its managed identity and keeps it in memory only.

import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { QueueServiceClient } from '@azure/storage-queue';
import { AccessDeniedError } from '../core/errors.js';
import { arm } from './arm-errors.js';
import type { StorageClientLike } from './clients.js';
import type { RegionalAccount } from './region.js';

export interface RegionalStorage {
  blob: BlobServiceClient;
  queue: QueueServiceClient;
  /** Signs the service SAS given to the worker. */
  signer: StorageSharedKeyCredential;
}

export type StorageFor = (account: RegionalAccount) => Promise<RegionalStorage>;

/** Clients signed with the account's key, read through ARM; cached per account for warm invocations. */
export function keyBasedStorage(opts: { storage: StorageClientLike; resourceGroup: string }): StorageFor {
  const cache = new Map<string, Promise<RegionalStorage>>();
  return (account) => {
    let p = cache.get(account.id);
    if (!p) {
      p = (async () => {
        const keys = await arm(`reading the keys of storage account ${account.name}`, () => opts.storage.storageAccounts.listKeys(opts.resourceGroup, account.name));
        const key = keys.keys?.find((k) => k.value)?.value;
        if (!key) {
          throw new AccessDeniedError(`storage account ${account.name} returned no usable key — shared-key access must stay enabled on it: Tender's revocable SAS are signed with it`);
        }
        const signer = new StorageSharedKeyCredential(account.name, key);
        return { signer, blob: new BlobServiceClient(account.blobUrl, signer), queue: new QueueServiceClient(account.queueUrl, signer) };
      })();
      cache.set(account.id, p);
      p.catch(() => cache.delete(account.id));
    }
    return p;
  };
}
