// RestorePoints for the Function app (applyRetention): the repository opened
// the way the worker opens it — store from its URL; the Key Vault key, or the
// passphrase from a Key Vault secret, with the app's managed identity.

import type { TokenCredential } from '@azure/identity';
import type { RestorePoints, RepositoryRef } from '../ports/restore-points.js';
import type { ObjectStore } from '../ports/object-store.js';
import { openStoreFromUrl } from '../../worker/store-from-url.js';
import { createRestorePointsPort } from '../../worker/restore-points.js';
import { repositorySecretFromAzureKeyRef } from './key-vault.js';
import type { RepositorySecret } from '../../worker/crypto.js';

export function createAzureRestorePoints(opts: { credential?: TokenCredential; openStore?: (url: string) => Promise<ObjectStore>; passphrase?: (ref: RepositoryRef['key']) => Promise<RepositorySecret> } = {}): RestorePoints {
  return createRestorePointsPort({
    openStore: opts.openStore ?? ((url: string) => openStoreFromUrl(url)),
    secret: opts.passphrase ?? ((ref) => repositorySecretFromAzureKeyRef(ref, { credential: opts.credential })),
  });
}
